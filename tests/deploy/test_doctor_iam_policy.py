"""deploy/doctor-iam-policy.json: what a person (or a CI job) running `sgmesh doctor` needs.

Generated (`iam_policy.render_doctor`); read-only; it allows exactly the operations doctor's
code calls; and when doctor runs over a cluster that exercises each of its reads (prefix lists,
instance profiles, node roles with managed and inline policies, a pod's branch ENI, the EKS
cluster, an installed mesh with selectors), every request it made, as recorded at the moto
server, is allowed and every action of the policy is used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devtools.aws.world import CNI_POLICY_ARN, World
from devtools.nodes import ClusterNodes
from devtools.operator_harness import Meshes
from sgmesh.api import iam_policy
from sgmesh.aws import client
from tests.deploy import iam

POLICY = iam.Policy.load(iam.DOCTOR_POLICY_FILE)
# moto serves no EKS Pod Identity API: doctor's two reads of it are shown on recorded answers
# (tests/unit/test_pod_identity.py), not at the moto server.
NOT_SERVED_BY_MOTO = {"eks:ListPodIdentityAssociations", "eks:DescribePodIdentityAssociation"}


def test_the_file_is_the_generated_policy() -> None:
    assert iam.DOCTOR_POLICY_FILE.read_text() == iam_policy.render_doctor(), (
        "regenerate it: python -c 'from sgmesh.api import iam_policy as p; "
        'print(p.render_doctor(), end="")\' > deploy/doctor-iam-policy.json'
    )


def test_policy_allows_exactly_the_operations_doctor_calls() -> None:
    called = iam.operations_in_code(iam.DOCTOR_MODULES)

    assert called, "no AWS call found in doctor's source"
    assert sorted(POLICY.actions - called) == [], "allowed but never called"
    assert sorted(called - POLICY.actions) == [], "called but not allowed"


def test_policy_only_reads() -> None:
    document = json.loads(iam.DOCTOR_POLICY_FILE.read_text())
    assert document["Version"] == "2012-10-17"
    for statement in POLICY.statements:
        assert statement.effect == "Allow"
        for action in statement.actions:
            operation = action.partition(":")[2]
            assert operation not in client.MUTATING_OPERATIONS, action
            assert operation.startswith(("Describe", "Get", "List")), action


def test_the_operator_policy_does_not_cover_doctor_and_needs_not_to() -> None:
    operator_calls = iam.operations_in_code()
    doctor_only = iam.operations_in_code(iam.DOCTOR_MODULES) - operator_calls

    # Doctor reads the entries of prefix lists (to tell which addresses a rule covers) and the
    # role of aws-node's Pod Identity association; the operator needs neither.
    assert {"ec2:GetManagedPrefixListEntries", "eks:DescribePodIdentityAssociation"} <= doctor_only
    assert not doctor_only & iam.Policy.load().actions


@pytest.mark.kube
def test_every_doctor_request_is_allowed_and_every_allowed_action_is_used(
    world: World,
    cluster_nodes: ClusterNodes,
    meshes: Meshes,
    aws_recording: iam.MotoRecording,
) -> None:
    world.eks_cluster("doctor-iam")  # its IP family, for the CNI's permissions
    for name in ("eks-system", "eks-a"):
        group = world.node_group(name, tags={"team": "data", "eks:cluster-name": "doctor-iam"})
        (instance_id,) = cluster_nodes.launch(group.asg, group.profile)
        cluster_nodes.register(f"{name}-node", instance_id)
    world.clients.iam.attach_role_policy(RoleName="eks-system", PolicyArn=CNI_POLICY_ARN)
    world.clients.iam.put_role_policy(
        RoleName="eks-a",
        PolicyName="cni",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}],
            }
        ),
    )
    cluster_nodes.coredns("coredns-1", "eks-system-node")
    branch, address = cluster_nodes.branch_interface([group.security_group_id])
    cluster_nodes.pod("payments", "eks-a-node", address, branch_interface=branch)
    prefix_list = world.clients.ec2.create_managed_prefix_list(
        PrefixListName="office",
        AddressFamily="IPv4",
        MaxEntries=5,
        Entries=[{"Cidr": "10.0.0.0/8"}],
    )["PrefixList"]["PrefixListId"]
    world.clients.ec2.authorize_security_group_ingress(
        GroupId=world.clients.ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["eks-system"]}]
        )["SecurityGroups"][0]["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "udp",
                "FromPort": 53,
                "ToPort": 53,
                "PrefixListIds": [{"PrefixListId": prefix_list}],
            }
        ],
    )
    meshes.create("data", {"autoScalingGroups": {"selectors": [{"tags": {"team": "data"}}]}})
    aws_recording.reset()

    process = subprocess.run(
        [sys.executable, "-m", "sgmesh", "doctor", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, AWS_SDK_UA_APP_ID=iam.DOCTOR_APP_ID),
        timeout=120,
    )
    requests = aws_recording.requests_of(iam.DOCTOR_APP_ID)

    assert process.returncode == 1, process.stderr
    report = json.loads(process.stdout)
    assert report["dns"]["eks-a"] == "partial"  # udp/53 through the prefix list, tcp/53 not
    assert {f["mesh"]["name"] for f in report["findings"] if f["mesh"]} >= {"data"}
    assert requests, "no request of doctor was recorded at the moto server"
    assert POLICY.refused(requests) == []
    made = {request.action for request in requests}
    assert sorted(POLICY.actions - NOT_SERVED_BY_MOTO - made) == [], "allowed, but never asked"
