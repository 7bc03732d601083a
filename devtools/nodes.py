"""A cluster's nodes as `sgmesh doctor` reads them: instances in moto, Nodes in the API server.

ASGs get capacity, so moto launches their instances (with the ASG tag and the launch
template's SGs); each instance is registered as a real Node with its `spec.providerID`; CoreDNS
is a real Pod bound to a node with `spec.nodeName`. No kubelet runs, and none is needed: doctor
reads only those fields. With no controller-manager, the namespace's default ServiceAccount
is created here.

moto launches an ASG's instances without the launch template's instance profile, where AWS
attaches it; `launch` associates the profile afterwards, which is what AWS would show.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from devtools.aws.world import IMAGE_ID, INSTANCE_TYPE, Profile, World

__all__ = ["ClusterNodes", "Kubectl"]

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
"""Runs kubectl with the given arguments; `stdin=` is passed on."""

DNS_NAMESPACE = "kube-system"
NODE_LABEL = "sgmesh.io/test-node"


class ClusterNodes:
    def __init__(self, world: World, kubectl: Kubectl) -> None:
        self.world = world
        self._kubectl = kubectl

    def _run(self, *args: str, stdin: str | None = None) -> str:
        result = self._kubectl(*args, stdin=stdin)
        if result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return str(result.stdout)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self._run("apply", "-f", "-", stdin=json.dumps(manifest))

    # ---- AWS ---------------------------------------------------------------------------------

    def launch(self, asg: str, profile: Profile | None, count: int = 1) -> list[str]:
        """Give `asg` capacity; the ids of the instances moto launched, with `profile` on."""
        autoscaling = self.world.clients.autoscaling
        autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=asg, MinSize=count, MaxSize=count, DesiredCapacity=count
        )
        (group,) = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])[
            "AutoScalingGroups"
        ]
        ids = sorted(instance["InstanceId"] for instance in group["Instances"])
        assert len(ids) == count, f"moto launched {len(ids)} instances for {asg}, not {count}"
        if profile is not None:
            for instance_id in ids:
                self.world.clients.ec2.associate_iam_instance_profile(
                    IamInstanceProfile={"Arn": profile.arn}, InstanceId=instance_id
                )
        return ids

    def run_instance(
        self,
        security_group_ids: Sequence[str],
        profile: Profile | None,
        tags: Mapping[str, str],
    ) -> str:
        """An instance outside any ASG (as Karpenter launches them), in the main VPC."""
        arguments: dict[str, Any] = {
            "ImageId": IMAGE_ID,
            "InstanceType": INSTANCE_TYPE,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": self.world.main_vpc.subnet_ids[0],
            "SecurityGroupIds": list(security_group_ids),
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ],
        }
        if profile is not None:
            arguments["IamInstanceProfile"] = {"Arn": profile.arn}
        answer = self.world.clients.ec2.run_instances(**arguments)
        return str(answer["Instances"][0]["InstanceId"])

    def private_address(self, instance_id: str) -> str:
        answer = self.world.clients.ec2.describe_instances(InstanceIds=[instance_id])
        return str(answer["Reservations"][0]["Instances"][0]["PrivateIpAddress"])

    # ---- Kubernetes --------------------------------------------------------------------------

    def register(self, name: str, instance_id: str, labels: Mapping[str, str] | None = None) -> str:
        """A Node for the instance, as the kubelet and the cloud provider would register it."""
        zone = f"{self.world.clients.region}a"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {NODE_LABEL: "true", **(labels or {})}},
                "spec": {"providerID": f"aws:///{zone}/{instance_id}"},
            }
        )
        return name

    def coredns(self, name: str, node: str) -> None:
        """A CoreDNS pod bound to `node` (label k8s-app=kube-dns in kube-system)."""
        self.service_account("default")
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": DNS_NAMESPACE,
                    "labels": {"k8s-app": "kube-dns"},
                },
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "coredns", "image": "coredns/coredns:1.11.3"}],
                },
            }
        )

    def service_account(self, name: str, annotations: Mapping[str, str] | None = None) -> None:
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": DNS_NAMESPACE,
                    "annotations": dict(annotations or {}),
                },
            }
        )

    def clear(self) -> None:
        """Remove what the tests made: the Nodes, CoreDNS pods (forced: no kubelet confirms
        their end) and the aws-node ServiceAccount."""
        self._run("delete", "nodes", "-l", NODE_LABEL, "--ignore-not-found", "--wait=false")
        self._run(
            "delete",
            "pods",
            "-n",
            DNS_NAMESPACE,
            "-l",
            "k8s-app=kube-dns",
            "--ignore-not-found",
            "--grace-period=0",
            "--force",
        )
        self._run("delete", "serviceaccount", "aws-node", "-n", DNS_NAMESPACE, "--ignore-not-found")
