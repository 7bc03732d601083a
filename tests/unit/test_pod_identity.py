"""EKS Pod Identity for aws-node on recorded EKS answers (moto serves no Pod Identity API): what
each answer of `eks:ListPodIdentityAssociations` means, doctor's read of the association's role,
and the Ready message that names what was found.

The answers are botocore's Stubber on a real EKS client: shapes and parameters are checked
against EKS's service model, nothing of sgmesh is patched. aws-node's pods deciding when EKS
cannot tell is shown against the API server (tests/integration/kube/test_pod_identity.py)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import botocore.exceptions
import pytest
from botocore.stub import Stubber

from sgmesh.aws import client, errors, inventory, pod_identity, reconcile
from sgmesh.controller import status
from sgmesh.doctor import command
from sgmesh.engine import cluster_members, planning
from tests.unit import builders

CLUSTER = "prod"
ROLE = "arn:aws:iam::123456789012:role/vpc-cni-pod-identity"
ASKED = {"clusterName": CLUSTER, "namespace": "kube-system", "serviceAccount": "aws-node"}
ASSOCIATION = {
    "clusterName": CLUSTER,
    "namespace": "kube-system",
    "serviceAccount": "aws-node",
    "associationArn": f"arn:aws:eks:us-east-1:123456789012:podidentityassociation/{CLUSTER}/a-1",
    "associationId": "a-1",
}


@pytest.fixture
def clients() -> client.AwsClients:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return client.make_clients(session=session)


@pytest.fixture
def eks(clients: client.AwsClients) -> Iterator[Stubber]:
    with Stubber(clients.eks) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def refuse(eks: Stubber, code: str, status_code: int, operation: str = "list") -> None:
    method = (
        "list_pod_identity_associations"
        if operation == "list"
        else "describe_pod_identity_association"
    )
    eks.add_client_error(
        method, service_error_code=code, service_message=code, http_status_code=status_code
    )


def test_an_association_for_aws_node_is_pod_identity(
    clients: client.AwsClients, eks: Stubber
) -> None:
    eks.add_response("list_pod_identity_associations", {"associations": [ASSOCIATION]}, ASKED)

    lookup = pod_identity.find_association(clients, CLUSTER)

    assert lookup.answered
    assert lookup.credentials is not None
    assert lookup.credentials.kind is cluster_members.CredentialKind.POD_IDENTITY
    assert lookup.credentials.association_id == "a-1"
    assert lookup.credentials.role_arn is None  # one more read, which the operator need not make
    assert lookup.credentials.evidence == (
        "association a-1 for kube-system/aws-node in EKS cluster prod"
    )


def test_no_association_is_a_final_answer(clients: client.AwsClients, eks: Stubber) -> None:
    eks.add_response("list_pod_identity_associations", {"associations": []}, ASKED)

    lookup = pod_identity.find_association(clients, CLUSTER)

    assert lookup == cluster_members.AssociationLookup(answered=True)


@pytest.mark.parametrize(
    ("code", "status_code", "why"),
    [
        pytest.param(
            "AccessDeniedException",
            403,
            "eks:ListPodIdentityAssociations is denied (AccessDeniedException)",
            id="denied",
        ),
        pytest.param(
            "ResourceNotFoundException",
            404,
            "EKS has no cluster named 'prod' in us-east-1",
            id="not-an-eks-cluster",
        ),
        # What botocore makes of a bare 404 (moto's answer: it has no Pod Identity API).
        pytest.param(
            "404",
            404,
            "the EKS endpoint of us-east-1 does not serve ListPodIdentityAssociations",
            id="not-served",
        ),
    ],
)
def test_eks_that_cannot_tell_leaves_it_to_the_pods(
    clients: client.AwsClients, eks: Stubber, code: str, status_code: int, why: str
) -> None:
    refuse(eks, code, status_code)

    lookup = pod_identity.find_association(clients, CLUSTER)

    assert lookup == cluster_members.AssociationLookup(answered=False, why=why)


@pytest.mark.parametrize(
    ("code", "status_code", "kind"),
    [
        ("ThrottlingException", 429, errors.ErrorKind.UNAVAILABLE),
        ("ServerException", 500, errors.ErrorKind.UNAVAILABLE),
        ("InvalidParameterException", 400, errors.ErrorKind.REJECTED),
    ],
)
def test_any_other_failure_is_an_aws_error_never_no_association(
    clients: client.AwsClients,
    eks: Stubber,
    code: str,
    status_code: int,
    kind: errors.ErrorKind,
) -> None:
    refuse(eks, code, status_code)

    with pytest.raises(botocore.exceptions.ClientError) as raised:
        pod_identity.find_association(clients, CLUSTER)

    failure = clients.classify(raised.value)
    assert failure.kind is kind
    assert failure.operation == "ListPodIdentityAssociations"


def test_doctor_reads_the_role_the_association_gives_and_checks_that_one(
    clients: client.AwsClients, eks: Stubber
) -> None:
    described = {**ASSOCIATION, "roleArn": ROLE}
    asked = {"clusterName": CLUSTER, "associationId": "a-1"}
    eks.add_response("list_pod_identity_associations", {"associations": [ASSOCIATION]}, ASKED)
    eks.add_response("describe_pod_identity_association", {"association": described}, asked)
    target = "arn:aws:iam::210987654321:role/vpc-cni"
    eks.add_response(
        "describe_pod_identity_association",
        {"association": {**described, "targetRoleArn": target}},
        asked,
    )

    found = command._pod_identity(clients, CLUSTER, pods=[])
    chained = inventory.read_association_role(clients, CLUSTER, "a-1")

    assert found is not None
    assert found.role_arn == ROLE
    assert found.kind is cluster_members.CredentialKind.POD_IDENTITY
    assert chained == target  # the pods act as the target role, which needs the policy


def test_doctor_without_the_clusters_name_or_an_answer_asks_the_pods(
    clients: client.AwsClients, eks: Stubber
) -> None:
    refuse(eks, "AccessDeniedException", 403)
    pod = {
        "metadata": {"name": "aws-node-1"},
        "spec": {
            "containers": [
                {
                    "name": "aws-node",
                    "env": [{"name": v} for v in cluster_members.POD_IDENTITY_VARIABLES],
                }
            ]
        },
    }

    unnamed = command._pod_identity(clients, None, pods=[pod])  # EKS is not asked
    denied = command._pod_identity(clients, CLUSTER, pods=[pod])
    no_pods = command._pod_identity(clients, None, pods=[])

    assert unnamed is not None
    assert "EKS could not tell: the nodes' instances name no one EKS cluster" in unnamed.evidence
    assert denied is not None
    assert "eks:ListPodIdentityAssociations is denied" in denied.evidence
    assert no_pods is None


def outcome_with(credentials: cluster_members.AwsNodeCredentials | None) -> reconcile.Outcome:
    topology = builders.world(builders.member("eks-a", "sg-a", roles=["eks-a"]))
    intent = builders.intent(attach_cni=credentials is None)
    return reconcile.Outcome(
        builders.OWNER,
        topology,
        planning.plan(topology, intent),
        None,
        cluster_members.ClusterMembers(aws_node_credentials=credentials),
    )


def test_the_ready_message_names_what_gives_aws_node_its_credentials() -> None:
    association = cluster_members.AwsNodeCredentials(
        cluster_members.CredentialKind.POD_IDENTITY,
        None,
        "association a-1 for kube-system/aws-node in EKS cluster prod",
        association_id="a-1",
    )
    irsa = cluster_members.irsa({cluster_members.IRSA_ANNOTATION: ROLE})

    pod_identity_note = status.cni_policy_note(outcome_with(association))
    irsa_note = status.cni_policy_note(outcome_with(irsa))

    assert pod_identity_note == (
        "the CNI policy is not put on node roles: aws-node gets its credentials from EKS Pod "
        "Identity (association a-1 for kube-system/aws-node in EKS cluster prod), so the policy "
        "belongs on the role of its association"
    )
    assert irsa_note == (
        "the CNI policy is not put on node roles: aws-node uses IRSA (kube-system/aws-node has "
        f"eks.amazonaws.com/role-arn {ROLE}), so the policy belongs on that role"
    )
    assert status.cni_policy_note(outcome_with(None)) is None
