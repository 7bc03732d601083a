"""A cluster's nodes as `sgmesh doctor` reads them: instances in moto, Nodes in the API server.

ASGs get capacity, so moto launches their instances (with the ASG tag and the launch
template's SGs); each instance is registered as a real Node with its `spec.providerID`; CoreDNS
and other pods are real Pods bound to a node with `spec.nodeName`, their address written to
their status as the kubelet would (a pod with a branch ENI carries the VPC resource
controller's `vpc.amazonaws.com/pod-eni` annotation naming a real moto ENI). Fargate nodes
(one pod each, on an ENI of their own found by the node's InternalIP) and EKS hybrid nodes
(outside the VPC) are registered as EKS registers them. No kubelet runs, and none is needed:
doctor reads only those fields. With no controller-manager, the namespace's default
ServiceAccount is created here.

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
POD_LABEL = "sgmesh.io/test-pod"
POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"
COMPUTE_TYPE_LABEL = "eks.amazonaws.com/compute-type"


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

    def interface_address(self, interface_id: str) -> str:
        answer = self.world.clients.ec2.describe_network_interfaces(
            NetworkInterfaceIds=[interface_id]
        )
        return str(answer["NetworkInterfaces"][0]["PrivateIpAddress"])

    def branch_interface(self, security_group_ids: Sequence[str]) -> tuple[str, str]:
        """A branch ENI as the VPC resource controller makes one for a pod (moto has no trunk
        association: a plain ENI with the pod's SGs stands for it); its id and address."""
        interface_id = self.world.network_interface(
            security_group_ids, description="aws-k8s-branch-eni"
        )
        return interface_id, self.interface_address(interface_id)

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

    def fargate_node(self, name: str, address: str, profile: str = "default") -> str:
        """A Fargate node as EKS registers it: named after its address, labelled with its
        compute type and profile, its providerID naming no instance, its address in status."""
        zone = f"{self.world.clients.region}a"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        NODE_LABEL: "true",
                        COMPUTE_TYPE_LABEL: "fargate",
                        "eks.amazonaws.com/fargate-profile": profile,
                    },
                },
                "spec": {"providerID": f"aws:///{zone}/0123456789-abcdef/{name}"},
            }
        )
        self._status(
            "node", name, None, {"addresses": [{"type": "InternalIP", "address": address}]}
        )
        return name

    def hybrid_node(self, name: str, address: str = "192.168.100.10") -> str:
        """An EKS hybrid node: a machine outside the VPC (on premises), as EKS registers it."""
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {NODE_LABEL: "true", COMPUTE_TYPE_LABEL: "hybrid"},
                },
                "spec": {
                    "providerID": f"eks-hybrid:///{self.world.clients.region}/test-cluster/{name}"
                },
            }
        )
        self._status(
            "node", name, None, {"addresses": [{"type": "InternalIP", "address": address}]}
        )
        return name

    def _status(
        self, kind: str, name: str, namespace: str | None, status: Mapping[str, Any]
    ) -> None:
        """Write an object's status as its kubelet would."""
        where = ["-n", namespace] if namespace else []
        self._run(
            "patch",
            kind,
            name,
            *where,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": status}),
        )

    def pod(
        self,
        name: str,
        node: str,
        address: str | None = None,
        *,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        branch_interface: str | None = None,
    ) -> None:
        """A pod bound to `node`, with `address` as its podIP; with `branch_interface`, the
        annotation the VPC resource controller writes for a pod with security groups."""
        self.namespace(namespace)
        self.service_account("default", namespace=namespace)
        annotations = {}
        if branch_interface is not None:
            annotations[POD_ENI_ANNOTATION] = json.dumps(
                [
                    {
                        "eniId": branch_interface,
                        "ifAddress": "02:00:00:00:00:01",
                        "privateIp": address,
                        "vlanId": 1,
                        "subnetCidr": "10.0.0.0/24",
                    }
                ]
            )
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {POD_LABEL: "true", **(labels or {})},
                    "annotations": annotations,
                },
                "spec": {
                    "nodeName": node,
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            }
        )
        if address is not None:
            self._status("pod", name, namespace, {"podIP": address, "podIPs": [{"ip": address}]})

    def coredns(
        self,
        name: str,
        node: str,
        address: str | None = None,
        branch_interface: str | None = None,
    ) -> None:
        """A CoreDNS pod bound to `node` (label k8s-app=kube-dns in kube-system), with its
        address when given (else none, as before the kubelet reports one)."""
        self.pod(
            name,
            node,
            address,
            namespace=DNS_NAMESPACE,
            labels={"k8s-app": "kube-dns"},
            branch_interface=branch_interface,
        )

    def namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def security_group_policy(
        self, namespace: str, name: str, group_ids: Sequence[str], pod_labels: Mapping[str, str]
    ) -> None:
        """A SecurityGroupPolicy (vpcresources.k8s.aws/v1beta1) giving matching pods the SGs."""
        self.namespace(namespace)
        self.apply(
            {
                "apiVersion": "vpcresources.k8s.aws/v1beta1",
                "kind": "SecurityGroupPolicy",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "podSelector": {"matchLabels": dict(pod_labels)},
                    "securityGroups": {"groupIds": list(group_ids)},
                },
            }
        )

    def service_account(
        self,
        name: str,
        annotations: Mapping[str, str] | None = None,
        namespace: str = DNS_NAMESPACE,
    ) -> None:
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "annotations": dict(annotations or {}),
                },
            }
        )

    def clear(self) -> None:
        """Remove what the tests made: the Nodes, CoreDNS and other pods (forced: no kubelet
        confirms their end) and the aws-node ServiceAccount."""
        self._run("delete", "nodes", "-l", NODE_LABEL, "--ignore-not-found", "--wait=false")
        self._run(
            "delete",
            "pods",
            "--all-namespaces",
            "-l",
            POD_LABEL,
            "--ignore-not-found",
            "--grace-period=0",
            "--force",
        )
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
