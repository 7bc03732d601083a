"""Ask EKS whether aws-node (the VPC CNI) gets its credentials from an EKS Pod Identity
association: `eks:ListPodIdentityAssociations` for the cluster, kube-system/aws-node.

EKS may be unable to tell, and then aws-node's pods decide (`sgmesh.kube.sources`): the
question denied (the identity lacks the permission), EKS knowing no cluster of that name (not an
EKS cluster, or `--cluster` is not its EKS name), or an endpoint that does not serve the Pod
Identity API. Every other failure (throttling, an outage, a rejected request) propagates as an
AWS error: it is never read as "no association".

Reads only: one call, which names the association but not its role (that takes
`eks:DescribePodIdentityAssociation`, which doctor makes and the operator need not: the
decision — no CNI policy on node roles — does not depend on which role it is).
"""

from __future__ import annotations

import botocore.exceptions

from sgmesh.aws import client, errors
from sgmesh.engine import cluster_members

__all__ = ["find_association"]


def find_association(clients: client.AwsClients, cluster: str) -> cluster_members.AssociationLookup:
    """The Pod Identity association of kube-system/aws-node in EKS cluster `cluster` (in the
    clients' region), or that there is none, or why EKS cannot tell."""
    try:
        answer = clients.eks.list_pod_identity_associations(
            clusterName=cluster,
            namespace=cluster_members.AWS_NODE_NAMESPACE,
            serviceAccount=cluster_members.AWS_NODE_SERVICE_ACCOUNT,
        )
    except errors.ERRORS as error:
        why = _cannot_tell(error, clients.region, cluster)
        if why is None:
            raise
        return cluster_members.AssociationLookup(answered=False, why=why)
    # EKS keeps at most one association per service account.
    for association in answer.get("associations", []):
        association_id = association.get("associationId", "?")
        evidence = (
            f"association {association_id} for "
            f"{cluster_members.AWS_NODE_NAMESPACE}/{cluster_members.AWS_NODE_SERVICE_ACCOUNT} "
            f"in EKS cluster {cluster}"
        )
        return cluster_members.AssociationLookup(
            answered=True,
            credentials=cluster_members.AwsNodeCredentials(
                cluster_members.CredentialKind.POD_IDENTITY,
                None,
                evidence,
                association_id=association_id,
            ),
        )
    return cluster_members.AssociationLookup(answered=True)


def _cannot_tell(error: Exception, region: str, cluster: str) -> str | None:
    """Why EKS cannot tell, when `error` says so; None for any other failure."""
    if errors.answered(error, errors.EKS_CLUSTER_ABSENT):
        return f"EKS has no cluster named {cluster!r} in {region}"
    if errors.answered(error, errors.OPERATION_NOT_SERVED):
        return f"the EKS endpoint of {region} does not serve ListPodIdentityAssociations"
    denied = errors.classify(error, "eks").kind is errors.ErrorKind.ACCESS_DENIED
    # A ClientError: AWS answered (no credentials at all is no answer of EKS's).
    if denied and isinstance(error, botocore.exceptions.ClientError):
        return f"eks:ListPodIdentityAssociations is denied ({errors.error_code(error)})"
    return None
