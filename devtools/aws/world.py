"""A small AWS world built on the moto server: VPCs, SGs, roles, launch templates and ASGs.

Tests, the sandbox and the benchmark describe the node groups they need in a few lines and get
back the ids AWS assigned. Every resource is made through the public AWS API (the same clients
the operator uses), so what they produce is what discovery will read. ASGs are created with no
capacity unless asked (`capacity`): instances are not needed to resolve an ASG and would only
slow a large world down. Where instances matter (the SGs running nodes still carry during a
rollout), moto launches an ASG's with the ASG's tag and its launch template's SGs, as AWS does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from sgmesh.aws import client

__all__ = [
    "CNI_POLICY_ARN",
    "NODE_ASSUME_ROLE_POLICY",
    "Mixed",
    "NodeGroup",
    "Override",
    "Profile",
    "Template",
    "Vpc",
    "World",
]

CNI_POLICY_ARN = "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
NODE_ASSUME_ROLE_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)
INSTANCE_TYPE = "m5.large"
IMAGE_ID = "ami-12c6146b"  # an image moto knows


@dataclass(frozen=True)
class Vpc:
    id: str
    subnet_ids: tuple[str, ...]


@dataclass(frozen=True)
class Profile:
    name: str
    arn: str
    role_name: str | None


@dataclass(frozen=True)
class Template:
    id: str
    name: str


@dataclass(frozen=True)
class Override:
    """One entry of a mixed instances policy; `template` set means it names its own."""

    instance_type: str = INSTANCE_TYPE
    template: Template | None = None
    version: str | None = None
    by_name: bool = False


@dataclass(frozen=True)
class Mixed:
    template: Template
    version: str | None = None
    overrides: tuple[Override, ...] = (Override(),)
    by_name: bool = False


@dataclass(frozen=True)
class NodeGroup:
    """An EKS-style node group: its own SG, node role with profile, launch template and ASG."""

    asg: str
    security_group_id: str
    role: str
    profile: Profile
    template: Template


@dataclass
class World:
    """Creates resources; `vpc` is created on first use and is where SGs and ASGs go by default."""

    clients: client.AwsClients
    _main_vpc: Vpc | None = field(default=None, init=False)
    _octets: Iterator[int] = field(default_factory=lambda: itertools.count(10), init=False)

    # ---- network -----------------------------------------------------------------------------

    def vpc(self, subnets: int = 1, *, like: Vpc | None = None) -> Vpc:
        """A new VPC (10.N.0.0/16) with `subnets` subnets; the first one made is the main VPC.
        `like`: over the same CIDR and subnets' CIDRs as that VPC (accounts reuse CIDRs)."""
        ec2 = self.clients.ec2
        if like is None:
            octet = next(self._octets)
        else:
            cidr = ec2.describe_vpcs(VpcIds=[like.id])["Vpcs"][0]["CidrBlock"]
            octet = int(cidr.split(".")[1])
        vpc_id = ec2.create_vpc(CidrBlock=f"10.{octet}.0.0/16")["Vpc"]["VpcId"]
        zones = [
            zone["ZoneName"] for zone in ec2.describe_availability_zones()["AvailabilityZones"]
        ]
        subnet_ids = tuple(
            ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=f"10.{octet}.{index}.0/24",
                AvailabilityZone=zones[index % len(zones)],
            )["Subnet"]["SubnetId"]
            for index in range(subnets)
        )
        created = Vpc(vpc_id, subnet_ids)
        if self._main_vpc is None:
            self._main_vpc = created
        return created

    @property
    def main_vpc(self) -> Vpc:
        return self._main_vpc or self.vpc()

    def eks_cluster(self, name: str, vpc: Vpc | None = None) -> str:
        """An EKS cluster over `vpc`'s subnets (the main VPC's by default), as EKS's
        DescribeCluster then answers for it; its ARN. Idempotent for the same name."""
        eks = self.clients.eks
        try:
            return eks.describe_cluster(name=name)["cluster"]["arn"]
        except eks.exceptions.ResourceNotFoundException:
            pass
        network = vpc or self.main_vpc
        created = eks.create_cluster(
            name=name,
            roleArn=f"arn:aws:iam::123456789012:role/{name}-cluster",
            resourcesVpcConfig={"subnetIds": list(network.subnet_ids)},
        )
        return created["cluster"]["arn"]

    def security_group(
        self, name: str, vpc: Vpc | None = None, tags: Mapping[str, str] | None = None
    ) -> str:
        arguments: dict[str, Any] = {
            "GroupName": name,
            "Description": f"{name} (test world)",
            "VpcId": (vpc or self.main_vpc).id,
        }
        if tags:
            arguments["TagSpecifications"] = [
                {"ResourceType": "security-group", "Tags": _tag_list(tags)}
            ]
        return self.clients.ec2.create_security_group(**arguments)["GroupId"]

    def default_security_group(self, vpc: Vpc | None = None) -> str:
        """The SG named "default" that every VPC has."""
        answer = self.clients.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [(vpc or self.main_vpc).id]},
                {"Name": "group-name", "Values": ["default"]},
            ]
        )
        return str(answer["SecurityGroups"][0]["GroupId"])

    def network_interface(
        self,
        group_ids: Sequence[str],
        vpc: Vpc | None = None,
        description: str | None = None,
        address: str | None = None,
    ) -> str:
        """An ENI in the first subnet of `vpc` with the given SGs (and primary `address`)."""
        arguments: dict[str, Any] = {
            "SubnetId": (vpc or self.main_vpc).subnet_ids[0],
            "Groups": list(group_ids),
        }
        if description is not None:
            arguments["Description"] = description
        if address is not None:
            arguments["PrivateIpAddress"] = address
        answer = self.clients.ec2.create_network_interface(**arguments)
        return str(answer["NetworkInterface"]["NetworkInterfaceId"])

    def attach_network_interface(
        self, interface_id: str, instance_id: str, device_index: int = 1
    ) -> None:
        self.clients.ec2.attach_network_interface(
            NetworkInterfaceId=interface_id, InstanceId=instance_id, DeviceIndex=device_index
        )

    def delete_network_interface(self, interface_id: str) -> None:
        self.clients.ec2.delete_network_interface(NetworkInterfaceId=interface_id)

    def delete_security_group(self, group_id: str) -> None:
        self.clients.ec2.delete_security_group(GroupId=group_id)

    def ingress_from_group(
        self,
        group_id: str,
        source_group_id: str,
        protocol: str = "-1",
        from_port: int | None = None,
        to_port: int | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> str:
        """Authorize one inbound rule from an SG; returns the rule id."""
        pair: dict[str, Any] = {"GroupId": source_group_id}
        if description is not None:
            pair["Description"] = description
        return self._authorize(
            group_id, _permission(protocol, from_port, to_port, UserIdGroupPairs=[pair]), tags
        )

    def ingress_from_cidr(
        self,
        group_id: str,
        cidr: str,
        protocol: str = "tcp",
        from_port: int | None = 443,
        to_port: int | None = 443,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        return self._authorize(
            group_id, _permission(protocol, from_port, to_port, IpRanges=[{"CidrIp": cidr}]), tags
        )

    def _authorize(
        self, group_id: str, permission: dict[str, Any], tags: Mapping[str, str] | None
    ) -> str:
        arguments: dict[str, Any] = {"GroupId": group_id, "IpPermissions": [permission]}
        if tags:
            arguments["TagSpecifications"] = [
                {"ResourceType": "security-group-rule", "Tags": _tag_list(tags)}
            ]
        answer = self.clients.ec2.authorize_security_group_ingress(**arguments)
        (rule,) = answer["SecurityGroupRules"]
        return rule["SecurityGroupRuleId"]

    def describe_ingress(self, group_id: str) -> list[dict[str, Any]]:
        """The inbound rules of one SG as DescribeSecurityGroupRules returns them."""
        answer = self.clients.ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group_id]}]
        )
        return [
            dict(rule)
            for rule in answer["SecurityGroupRules"]
            if not rule.get("IsEgress") and rule.get("GroupId") == group_id
        ]

    def owned_pairs(self, group_ids: Iterable[str], owner_key: str) -> set[tuple[str, str]]:
        """(target SG, source SG) of every inbound rule of `group_ids` that carries the
        ownership tag `owner_key` (`sgmesh.io/<cluster>/<mesh>`)."""
        return {
            (group_id, rule["ReferencedGroupInfo"]["GroupId"])
            for group_id in group_ids
            for rule in self.describe_ingress(group_id)
            if "ReferencedGroupInfo" in rule
            and any(tag["Key"] == owner_key for tag in rule.get("Tags", []))
        }

    # ---- instances ---------------------------------------------------------------------------

    def instance(
        self,
        security_group_ids: Sequence[str],
        tags: Mapping[str, str] | None = None,
        vpc: Vpc | None = None,
    ) -> str:
        """A running instance outside any ASG (as Karpenter launches them: it tags each with
        `karpenter.k8s.aws/ec2nodeclass`), in the first subnet of `vpc`; its id."""
        arguments: dict[str, Any] = {
            "ImageId": IMAGE_ID,
            "InstanceType": INSTANCE_TYPE,
            "MinCount": 1,
            "MaxCount": 1,
            "SubnetId": (vpc or self.main_vpc).subnet_ids[0],
            "SecurityGroupIds": list(security_group_ids),
        }
        if tags:
            arguments["TagSpecifications"] = [{"ResourceType": "instance", "Tags": _tag_list(tags)}]
        answer = self.clients.ec2.run_instances(**arguments)
        return str(answer["Instances"][0]["InstanceId"])

    def terminate_instances(self, instance_ids: Sequence[str]) -> None:
        self.clients.ec2.terminate_instances(InstanceIds=list(instance_ids))

    # ---- IAM ---------------------------------------------------------------------------------

    def role(
        self,
        name: str,
        tags: Mapping[str, str] | None = None,
        policy_arns: Sequence[str] = (),
    ) -> str:
        arguments: dict[str, Any] = {
            "RoleName": name,
            "AssumeRolePolicyDocument": NODE_ASSUME_ROLE_POLICY,
        }
        if tags:
            arguments["Tags"] = _tag_list(tags)
        self.clients.iam.create_role(**arguments)
        for policy_arn in policy_arns:
            self.clients.iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
        return name

    def instance_profile(self, name: str, role: str | None = None, path: str = "/") -> Profile:
        profile = self.clients.iam.create_instance_profile(InstanceProfileName=name, Path=path)
        if role is not None:
            self.clients.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
        return Profile(name, profile["InstanceProfile"]["Arn"], role)

    def role_with_profile(
        self,
        name: str,
        tags: Mapping[str, str] | None = None,
        policy_arns: Sequence[str] = (),
        profile_name: str | None = None,
        path: str = "/",
    ) -> Profile:
        """A node role and an instance profile holding it (named like the role by default)."""
        self.role(name, tags=tags, policy_arns=policy_arns)
        return self.instance_profile(profile_name or name, role=name, path=path)

    def delete_instance_profile(self, profile: Profile) -> None:
        if profile.role_name is not None:
            self.clients.iam.remove_role_from_instance_profile(
                InstanceProfileName=profile.name, RoleName=profile.role_name
            )
        self.clients.iam.delete_instance_profile(InstanceProfileName=profile.name)

    def role_tags(self, name: str) -> dict[str, str]:
        tags = self.clients.iam.list_role_tags(RoleName=name)["Tags"]
        return {tag["Key"]: tag["Value"] for tag in tags}

    def attached_policy_arns(self, name: str) -> set[str]:
        answer = self.clients.iam.list_attached_role_policies(RoleName=name)
        return {policy["PolicyArn"] for policy in answer["AttachedPolicies"]}

    # ---- launch templates and configurations -------------------------------------------------

    def launch_template(
        self,
        name: str,
        security_group_ids: Sequence[str] = (),
        security_group_names: Sequence[str] = (),
        interface_groups: Sequence[Sequence[str]] = (),
        profile_arn: str | None = None,
        profile_name: str | None = None,
        network_interface_id: str | None = None,
        user_data: str | None = None,
    ) -> Template:
        """A launch template whose first version carries what is given; omitted parts are absent.

        `interface_groups`: one list of SG ids per network interface; `network_interface_id`:
        an existing ENI as the first network interface; `user_data`: base64 text.
        """
        data = _template_data(
            security_group_ids, security_group_names, interface_groups, profile_arn, profile_name
        )
        if network_interface_id is not None:
            data["NetworkInterfaces"] = [
                {"DeviceIndex": 0, "NetworkInterfaceId": network_interface_id}
            ]
        if user_data is not None:
            data["UserData"] = user_data
        answer = self.clients.ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=cast(Any, data)
        )
        template = answer["LaunchTemplate"]
        return Template(template["LaunchTemplateId"], template["LaunchTemplateName"])

    def launch_template_version(
        self,
        template: Template,
        security_group_ids: Sequence[str] = (),
        security_group_names: Sequence[str] = (),
        interface_groups: Sequence[Sequence[str]] = (),
        profile_arn: str | None = None,
        profile_name: str | None = None,
        make_default: bool = False,
    ) -> int:
        """A new version of `template` (it becomes $Latest); returns its number."""
        data = _template_data(
            security_group_ids, security_group_names, interface_groups, profile_arn, profile_name
        )
        answer = self.clients.ec2.create_launch_template_version(
            LaunchTemplateId=template.id, LaunchTemplateData=cast(Any, data)
        )
        number = int(answer["LaunchTemplateVersion"]["VersionNumber"])
        if make_default:
            self.set_default_version(template, number)
        return number

    def set_default_version(self, template: Template, number: int) -> None:
        self.clients.ec2.modify_launch_template(
            LaunchTemplateId=template.id, DefaultVersion=str(number)
        )

    def delete_launch_template(self, template: Template) -> None:
        self.clients.ec2.delete_launch_template(LaunchTemplateId=template.id)

    def launch_configuration(
        self, name: str, security_groups: Sequence[str] = (), profile: str | None = None
    ) -> str:
        """A legacy launch configuration; `security_groups` may hold ids or names, `profile`
        a name or an ARN."""
        arguments: dict[str, Any] = {
            "LaunchConfigurationName": name,
            "ImageId": IMAGE_ID,
            "InstanceType": INSTANCE_TYPE,
            "SecurityGroups": list(security_groups),
        }
        if profile is not None:
            arguments["IamInstanceProfile"] = profile
        self.clients.autoscaling.create_launch_configuration(**arguments)
        return name

    def delete_launch_configuration(self, name: str) -> None:
        self.clients.autoscaling.delete_launch_configuration(LaunchConfigurationName=name)

    # ---- auto scaling groups -----------------------------------------------------------------

    def asg(
        self,
        name: str,
        launch_template: Template | None = None,
        version: str | None = None,
        by: Literal["id", "name"] = "id",
        mixed: Mixed | None = None,
        launch_configuration: str | None = None,
        tags: Mapping[str, str] | None = None,
        vpc: Vpc | None = None,
        capacity: int = 0,
    ) -> str:
        """An ASG in `vpc` launching from exactly one of the three sources, with `capacity`
        instances (none by default)."""
        arguments: dict[str, Any] = {
            "AutoScalingGroupName": name,
            "MinSize": 0,
            "MaxSize": capacity,
            "DesiredCapacity": capacity,
            "VPCZoneIdentifier": ",".join((vpc or self.main_vpc).subnet_ids),
        }
        if launch_template is not None:
            arguments["LaunchTemplate"] = _specification(launch_template, version, by == "name")
        if mixed is not None:
            arguments["MixedInstancesPolicy"] = {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": _specification(
                        mixed.template, mixed.version, mixed.by_name
                    ),
                    "Overrides": [_override(override) for override in mixed.overrides],
                },
            }
        if launch_configuration is not None:
            arguments["LaunchConfigurationName"] = launch_configuration
        if tags:
            arguments["Tags"] = [
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": key,
                    "Value": value,
                    "PropagateAtLaunch": True,
                }
                for key, value in tags.items()
            ]
        self.clients.autoscaling.create_auto_scaling_group(**arguments)
        return name

    def set_capacity(self, name: str, capacity: int) -> None:
        """Launch or terminate instances until the ASG has `capacity` (moto acts at once)."""
        self.clients.autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=name, MinSize=0, MaxSize=capacity, DesiredCapacity=capacity
        )

    def asg_instances(self, name: str) -> list[str]:
        """The ids of the instances the ASG holds."""
        (group,) = self.clients.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name]
        )["AutoScalingGroups"]
        return sorted(instance["InstanceId"] for instance in group.get("Instances", []))

    def delete_asg(self, name: str) -> None:
        self.clients.autoscaling.delete_auto_scaling_group(
            AutoScalingGroupName=name, ForceDelete=True
        )

    def node_group(
        self,
        name: str,
        vpc: Vpc | None = None,
        tags: Mapping[str, str] | None = None,
        version: str | None = None,
        role_tags: Mapping[str, str] | None = None,
        policy_arns: Sequence[str] = (),
        capacity: int = 0,
    ) -> NodeGroup:
        """What an EKS node group is made of, all named `name`: the common case in one call."""
        group_id = self.security_group(name, vpc=vpc)
        profile = self.role_with_profile(name, tags=role_tags, policy_arns=policy_arns)
        template = self.launch_template(
            name, security_group_ids=[group_id], profile_arn=profile.arn
        )
        self.asg(
            name, launch_template=template, version=version, tags=tags, vpc=vpc, capacity=capacity
        )
        return NodeGroup(name, group_id, name, profile, template)


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _permission(
    protocol: str, from_port: int | None, to_port: int | None, **sources: Any
) -> dict[str, Any]:
    permission: dict[str, Any] = {"IpProtocol": protocol, **sources}
    if from_port is not None:
        permission["FromPort"] = from_port
    if to_port is not None:
        permission["ToPort"] = to_port
    return permission


def _template_data(
    security_group_ids: Sequence[str],
    security_group_names: Sequence[str],
    interface_groups: Sequence[Sequence[str]],
    profile_arn: str | None,
    profile_name: str | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"ImageId": IMAGE_ID, "InstanceType": INSTANCE_TYPE}
    if security_group_ids:
        data["SecurityGroupIds"] = list(security_group_ids)
    if security_group_names:
        data["SecurityGroups"] = list(security_group_names)
    if interface_groups:
        data["NetworkInterfaces"] = [
            {"DeviceIndex": index, "Groups": list(groups)}
            for index, groups in enumerate(interface_groups)
        ]
    if profile_arn is not None:
        data["IamInstanceProfile"] = {"Arn": profile_arn}
    elif profile_name is not None:
        data["IamInstanceProfile"] = {"Name": profile_name}
    return data


def _specification(template: Template, version: str | None, by_name: bool) -> dict[str, str]:
    specification = (
        {"LaunchTemplateName": template.name} if by_name else {"LaunchTemplateId": template.id}
    )
    if version is not None:
        specification["Version"] = version
    return specification


def _override(override: Override) -> dict[str, Any]:
    entry: dict[str, Any] = {"InstanceType": override.instance_type}
    if override.template is not None:
        entry["LaunchTemplateSpecification"] = _specification(
            override.template, override.version, override.by_name
        )
    return entry
