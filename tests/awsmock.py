"""An AWS-compatible API on 127.0.0.1 for the tests: moto in server mode, with moto's gaps filled.

The kit's AWS code runs unchanged against it through AWS_ENDPOINT_URL. What moto lacks, and
this module adds (in the test server, never in the roles):

- the load-balancer attributes real AWS returns (moto leaves out idle_timeout.timeout_seconds,
  which amazon.aws.elb_application_lb then fails on with a KeyError), and volumes' SnapshotId
  and gp3 throughput;
- IAM's action names for CloudWatch (cloudwatch:..., where moto checks monitoring:...);
- what AWS refuses and moto allows: deleting a load balancer under deletion protection, access
  logs to a bucket whose policy does not let the load balancer write;
- the Deep Learning Base AMI's public SSM parameters (/aws/service/deeplearning/...), each
  pointing at an AMI registered in moto's EC2, since /aws/ names cannot be created through the API;
- target registration and health as an ALB has them (TargetStates): initial, healthy,
  unhealthy, draining for the deregistration delay, unused, with AWS's reason codes, per
  instance and port, with durations scaled down (ALB_TIME_SCALE). A target whose address is known
  (probe_targets) passes a health check only while GET <its URL><health check path> answers a
  matcher code; moto's own instances have no address and pass. Two switches for what AWS leaves
  open: RegisterTargets on a draining target cancels the drain or is ignored until the drain ends
  (DRAINING_REGISTER), and the load balancer's nodes keep routing new requests to a deregistered
  target for DEREGISTRATION_LAG seconds (routed()).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from moto import settings as moto_settings
from moto.elbv2 import exceptions as elbv2_exceptions
from moto.elbv2 import models as elbv2_models
from moto.server import ThreadedMotoServer
from moto.ssm import models as ssm_models

import kit

REGION = "us-east-1"
DLAMI_PATH = "/aws/service/deeplearning/ami/{arch}/base-oss-nvidia-driver-gpu-{os}/latest/ami-id"
DLAMI_SYSTEMS = ("ubuntu-22.04", "ubuntu-24.04", "amazon-linux-2023")
# What DescribeLoadBalancerAttributes returns for a new ALB on real AWS (the ones moto omits).
ALB_ATTRIBUTES = {
    "idle_timeout.timeout_seconds": "60",
    "client_keep_alive.seconds": "3600",
    "routing.http2.enabled": "true",
    "routing.http.drop_invalid_header_fields.enabled": "false",
    "routing.http.desync_mitigation_mode": "defensive",
    "waf.fail_open.enabled": "false",
    "access_logs.s3.enabled": "false",
    "access_logs.s3.bucket": "",
    "access_logs.s3.prefix": "",
}

# target id -> base URL ("http://127.0.0.1:18000") of what the ALB would reach; filled by tests.
probe_targets: dict[str, str] = {}
# AMI ids the DLAMI parameters resolve to, by (arch, os); filled when the server starts.
dlami_ids: dict[tuple[str, str], str] = {}


def _patch_load_balancer_attributes() -> None:
    original = elbv2_models.FakeLoadBalancer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.type == "application":
            for key, value in ALB_ATTRIBUTES.items():
                self.attrs.setdefault(key, value)

    elbv2_models.FakeLoadBalancer.__init__ = init


def _patch_volumes() -> None:
    """Volumes as DescribeVolumes has them on AWS, where moto differs: SnapshotId always there ("" for
    a volume made from none; amazon.aws.ec2_vol_info fails on a KeyError without it), and a gp3
    volume launched with an instance keeps the IOPS and throughput asked for (moto drops the
    throughput), 3000 and 125 when none were asked for."""
    from moto.ec2.models import elastic_block_store, instances
    from moto.ec2.responses import instances as instance_responses

    asked = threading.local()  # device name -> its Ebs settings, for the RunInstances call of this thread
    volume_init, parse = (
        elastic_block_store.Volume.__init__,
        instance_responses.InstanceResponse._parse_block_device_mapping,
    )
    add_block_device = instances.Instance.add_block_device

    def init(self, *args, **kwargs):
        volume_init(self, *args, **kwargs)
        self.snapshot_id = self.snapshot_id or ""
        if self.volume_type == "gp3":
            self.iops, self.throughput = self.iops or 3000, self.throughput or 125

    def parse_block_device_mapping(self):
        asked.devices = {m.get("DeviceName"): m.get("Ebs", {}) for m in self._get_param("BlockDeviceMappings", [])}
        return parse(self)

    def add_block_device_as_asked(self, size, device_path, *args, **kwargs):
        add_block_device(self, size, device_path, *args, **kwargs)
        ebs = getattr(asked, "devices", {}).get(device_path, {})
        volume = self.ec2_backend.get_volume(self.block_device_mapping[device_path].volume_id)
        volume.iops = int(ebs.get("Iops") or volume.iops or 0) or None
        volume.throughput = int(ebs.get("Throughput") or volume.throughput or 0) or None

    elastic_block_store.Volume.__init__ = init
    instance_responses.InstanceResponse._parse_block_device_mapping = parse_block_device_mapping
    instances.Instance.add_block_device = add_block_device_as_asked


def _patch_load_balancer_rules() -> None:
    """What AWS refuses and moto allows: deleting a load balancer under deletion protection, and
    turning access logs on for a bucket that does not exist or whose policy does not let the
    load balancer write. And what AWS returns and moto does not: the actions' Order."""

    backend_class = elbv2_models.ELBv2Backend
    delete, modify = backend_class.delete_load_balancer, backend_class.modify_load_balancer_attributes

    def delete_load_balancer(self, arn):
        balancer = self.load_balancers.get(arn)
        if balancer is not None and balancer.attrs.get("deletion_protection.enabled") == "true":
            message = f"Load balancer '{arn}' cannot be deleted because deletion protection is enabled"
            raise elbv2_exceptions.ELBClientError("OperationNotPermitted", message)
        return delete(self, arn)

    def modify_load_balancer_attributes(self, arn, attrs):
        balancer = self.load_balancers.get(arn)
        merged = (balancer.attrs if balancer else {}) | attrs
        if merged.get("access_logs.s3.enabled") == "true":
            bucket_name = merged.get("access_logs.s3.bucket", "")
            bucket = log_bucket(self.account_id, bucket_name)
            policy = (bucket.policy or b"").decode() if bucket else ""
            if "logdelivery.elasticloadbalancing.amazonaws.com" not in policy or kms_encrypted(bucket):
                raise elbv2_exceptions.InvalidConfigurationRequest(
                    f"Access Denied for bucket: {bucket_name}. Please check S3bucket permission"
                )
        return modify(self, arn, attrs)

    backend_class.delete_load_balancer = delete_load_balancer
    backend_class.modify_load_balancer_attributes = modify_load_balancer_attributes

    # AWS numbers a listener's or rule's actions: a single action given without Order comes back
    # with Order 1 (amazon.aws compares rule actions whole, so a rule without it changes every run).
    action_init = elbv2_models.FakeAction.__init__

    def numbered_action(self, data):
        action_init(self, {"Order": 1} | data)

    elbv2_models.FakeAction.__init__ = numbered_action


def log_bucket(account_id: str, name: str):
    """The bucket NAME, of any account (as S3 finds another account's bucket); None if none."""
    from moto.s3.exceptions import MissingBucket
    from moto.s3.models import s3_backends

    with contextlib.suppress(MissingBucket):
        return s3_backends[account_id]["aws"].get_bucket(name)
    return None


def kms_encrypted(bucket) -> bool:
    """Whether BUCKET's default encryption is SSE-KMS, which access logs do not support (AWS "Enable
    access logs for your Application Load Balancer": SSE-S3 only); AWS answers Access Denied."""
    rules = (bucket.encryption or {}).get("Rule", {}) if bucket else {}
    rules = rules if isinstance(rules, list) else [rules]
    return any("kms" in str(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "")) for r in rules)


def _patch_s3_action_names() -> None:
    """IAM's actions for the bucket reads moto names otherwise: HeadBucket needs s3:ListBucket, and
    GetBucketEncryption s3:GetEncryptionConfiguration (AWS's S3 API reference for each)."""
    from moto.s3 import responses as s3_responses

    s3_responses.ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"
    s3_responses.ACTION_MAP["BUCKET"]["GET"]["encryption"] = "GetEncryptionConfiguration"


def _patch_dlami_parameters() -> None:
    original = ssm_models.ParameterDict._check_loading_status

    def check(self, key):
        original(self, key)
        if str(key or "").startswith("/aws/service/deeplearning/") and not getattr(self, "kit_dlami_loaded", False):
            self.kit_dlami_loaded = True
            for (arch, system), image_id in dlami_ids.items():
                name = DLAMI_PATH.format(arch=arch, os=system)
                super(ssm_models.ParameterDict, self).__getitem__(name).append(
                    ssm_models.Parameter(
                        account_id=self.account_id,
                        name=name,
                        value=image_id,
                        parameter_type="String",
                        description=None,
                        allowed_pattern=None,
                        keyid=None,
                        last_modified_date=ssm_models.utcnow(),
                        version=1,
                        data_type="aws:ec2:image",
                    )
                )

    ssm_models.ParameterDict._check_loading_status = check


def _probe(url: str, matcher: str, timeout: float) -> tuple[bool, str, str]:
    """One ALB health check: (passed, reason, description) as DescribeTargetHealth words a failure."""
    codes = {int(code) for code in matcher.split(",") if code.strip().isdigit()}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except TimeoutError:
        return False, "Target.Timeout", "Request timed out"
    except OSError:
        return False, "Target.FailedHealthChecks", "Health checks failed"
    if status in codes:
        return True, "", ""
    return False, "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{status}]"


@dataclass
class Target:
    """One registered target as an ALB keeps it: its state, and its run of health-check results."""

    state: str = "initial"
    reason: str = "Elb.RegistrationInProgress"
    description: str = "Target registration is in progress"
    since: float = field(default_factory=time.monotonic)
    next_check: float = 0.0
    passes: int = 0
    failures: int = 0
    routed_until: float = 0.0  # draining, but still sent new requests until then (DEREGISTRATION_LAG)


class TargetStates:
    """Target health as an ALB has it, per (instance, port), on a clock whose durations are ALB_TIME_SCALE times AWS's:

    - registered: initial (Elb.RegistrationInProgress, then Elb.InitialHealthChecking) until
      healthy_threshold checks in a row pass, then healthy; unhealthy after
      unhealthy_threshold failures in a row (Target.ResponseCodeMismatch, Target.Timeout,
      Target.FailedHealthChecks); health checks every interval, answered by the target's URL
      in probe_targets (a target without one passes, as moto's targets do);
    - deregistered, or its instance terminated: draining (Target.DeregistrationInProgress) for the
      group's deregistration delay, then gone; RegisterTargets on a draining target cancels the
      drain and starts the health checks again (initial);
    - its instance stopped: unused (Target.InvalidState); not registered: unused
      (Target.NotRegistered); in a group no load balancer forwards to: unused (Target.NotInUse),
      never checked.
    """

    def __init__(self):
        self.lock = threading.RLock()
        self.groups: dict[str, dict[tuple[str, int], Target]] = {}
        # (target "<id>:<port>", from state, to state) of every change, and (instance, "running",
        # "terminated") of every instance terminated, in order, for tests to read.
        self.events: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self.running = False

    def _set(self, name: str, key: tuple[str, int], target: Target, state: str, reason: str, text: str) -> None:
        if state == "draining":  # the nodes apply a deregistration late (DEREGISTRATION_LAG)
            target.routed_until = time.monotonic() + DEREGISTRATION_LAG if target.state == "healthy" else 0.0
        if target.state != state:
            self.events.append((f"{key[0]}:{key[1]}", target.state, state))
            target.since = time.monotonic()
        target.state, target.reason, target.description = state, reason, text

    def register(self, group, targets: list[dict]) -> None:
        with self.lock:
            members = self.groups.setdefault(group.arn, {})
            for wanted in targets:
                key = (wanted["Id"], int(wanted.get("Port") or group.port))
                if key[0].startswith("i-") and not group.ec2_backend.get_instance_by_id(key[0]):
                    raise elbv2_exceptions.InvalidTargetError()
                current = members.get(key)
                if current is None:
                    members[key] = Target()
                    self.events.append((f"{key[0]}:{key[1]}", "unused", "initial"))
                elif current.state == "draining" and DRAINING_REGISTER == "cancels":  # "ignored": stays draining
                    self._set(group.arn, key, current, "initial", "Elb.RegistrationInProgress",
                              "Target registration is in progress")  # fmt: skip
                    current.passes = current.failures = 0
                    current.next_check = 0.0

    def deregister(self, group, targets: list[dict]) -> None:
        """AWS returns successfully for a target that is not registered."""
        with self.lock:
            members = self.groups.setdefault(group.arn, {})
            for leaving in targets:
                key = (leaving["Id"], int(leaving.get("Port") or group.port))
                if key in members and members[key].state != "draining":
                    self._set(group.arn, key, members[key], "draining", "Target.DeregistrationInProgress",
                              "Target deregistration is in progress")  # fmt: skip

    def terminated(self, instance_ids: list[str]) -> None:
        """AWS deregisters a terminated instance's targets."""
        with self.lock:
            self.events.extend((instance, "running", "terminated") for instance in instance_ids)
            for arn, members in self.groups.items():
                for key, target in members.items():
                    if key[0] in instance_ids and target.state != "draining":
                        self._set(arn, key, target, "draining", "Target.DeregistrationInProgress",
                                  "Target deregistration is in progress")  # fmt: skip

    def describe(self, group, targets: list[dict]) -> list:
        with self.lock:
            members = self.groups.get(group.arn, {})
            keys = [(t["Id"], int(t.get("Port") or group.port)) for t in targets] if targets else list(members)
            found = []
            for key in keys:
                target = members.get(key)
                instance = group.ec2_backend.get_instance_by_id(key[0]) if key[0].startswith("i-") else None
                if target is None:
                    health = ("unused", "Target.NotRegistered", "Target is not registered to the target group")
                elif target.state != "draining" and instance is not None and instance.state == "stopped":
                    health = ("unused", "Target.InvalidState", "Target is in the stopped state")
                elif target.state != "draining" and not group.load_balancer_arns:
                    health = ("unused", "Target.NotInUse",
                              "Target group is not configured to receive traffic from the load balancer")  # fmt: skip
                elif target.state == "healthy":
                    health = ("healthy", None, None)
                else:
                    health = (target.state, target.reason, target.description)
                found.append(elbv2_models.FakeHealthStatus(key[0], key[1], group.health_check_port, *health))
            return found

    def routed(self, group) -> set[str]:
        """The targets ("<id>:<port>") the load balancer's nodes send new requests to: the healthy
        ones, and the draining ones deregistered less than DEREGISTRATION_LAG ago."""
        now = time.monotonic()
        with self.lock:
            members = self.groups.get(group.arn, {}).items()
            return {f"{k[0]}:{k[1]}" for k, t in members if t.state == "healthy" or now < t.routed_until}

    def _due(self, now: float) -> list[tuple]:
        """Ends the drains that are over; returns the health checks due now (group, key, target, url)."""
        due = []
        for backend in [b for regions in elbv2_models.elbv2_backends.values() for b in regions.values()]:
            for group in list(backend.target_groups.values()):
                members = self.groups.get(group.arn, {})
                delay = float(group.attributes.get("deregistration_delay.timeout_seconds", 300)) * DRAIN_TIME_SCALE
                for key, target in list(members.items()):
                    instance = group.ec2_backend.get_instance_by_id(key[0]) if key[0].startswith("i-") else None
                    if target.state == "draining":
                        if now - target.since >= delay:
                            del members[key]
                            self.events.append((f"{key[0]}:{key[1]}", "draining", "unused"))
                    elif instance is not None and instance.state == "stopped":
                        target.passes, target.failures, target.state = 0, 0, "initial"  # checked again once started
                    elif group.load_balancer_arns and now >= target.next_check:
                        target.next_check = now + float(group.health_check_interval_seconds or 30) * ALB_TIME_SCALE
                        base = probe_targets.get(f"{key[0]}:{key[1]}")
                        due.append((group, key, target, base + (group.health_check_path or "/") if base else None))
        return due

    def _record(self, group, key: tuple[str, int], target: Target, result: tuple[bool, str, str]) -> None:
        passed, reason, text = result
        if passed:
            target.passes, target.failures = target.passes + 1, 0
            if target.state != "healthy" and target.passes >= int(group.healthy_threshold_count):
                self._set(group.arn, key, target, "healthy", "", "")
        else:
            target.passes, target.failures = 0, target.failures + 1
            if target.state == "healthy" and target.failures >= int(group.unhealthy_threshold_count):
                self._set(group.arn, key, target, "unhealthy", reason, text)
            elif target.state == "unhealthy":
                target.reason, target.description = reason, text
        if target.state == "initial":
            target.reason, target.description = "Elb.InitialHealthChecking", "Initial health checks in progress"

    def tick(self) -> None:
        """The drains that end and the health checks that are due now (probed outside the lock)."""
        with self.lock:
            due = self._due(time.monotonic())
        for group, key, target, url in due:
            timeout = max(1.0, float(group.health_check_timeout_seconds or 5) * ALB_TIME_SCALE)
            result = _probe(url, group.matcher.get("HttpCode", "200"), timeout) if url else (True, "", "")
            with self.lock:
                if self.groups.get(group.arn, {}).get(key) is target and target.state != "draining":
                    self._record(group, key, target, result)

    def run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(Exception):  # a group deleted mid-tick: the next tick sees it gone
                self.tick()

    def stop(self) -> None:
        self._stop.set()


# The test ALB's durations (health-check intervals and timeouts, deregistration delays) are
# AWS's times this; set by Aws().
ALB_TIME_SCALE = 1.0
DRAIN_TIME_SCALE = 1.0  # deregistration delays alone
# What RegisterTargets does to a draining instance target: "cancels" the drain (health checks
# again, initial), or is "ignored" (it stays draining until the delay ends, then is not
# registered). AWS documents neither for instance targets (for IP targets: wait for the delay;
# ../shared/docs/engines.md section 0 item 14); set by Aws(), the tests run both.
DRAINING_REGISTER = "cancels"
# Seconds the load balancer's nodes keep sending new requests to a target after its
# deregistration: about 17 s observed on AWS, longer reported, no bound documented
# (aws-load-balancer-controller#2366, #3270); set by Aws().
DEREGISTRATION_LAG = 0.0
targets = TargetStates()


def _patch_targets() -> None:
    """Target registration and health as an ALB has them (TargetStates), not moto's."""
    group_class, backend_class = elbv2_models.FakeTargetGroup, elbv2_models.ELBv2Backend
    group_class.register = lambda self, wanted: targets.register(self, wanted)
    group_class.deregister = lambda self, leaving: targets.deregister(self, leaving)
    group_class.deregister_terminated_instances = lambda self, ids: targets.terminated(ids)

    def describe_target_health(self, target_group_arn, wanted):
        group = self.target_groups.get(target_group_arn)
        if group is None:
            raise elbv2_exceptions.TargetGroupNotFoundError()
        return targets.describe(group, wanted)

    backend_class.describe_target_health = describe_target_health


def _register_dlamis(endpoint: str) -> None:
    import boto3

    ec2 = boto3.client(
        "ec2", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    for arch in ("x86_64", "arm64"):
        for system in DLAMI_SYSTEMS:
            source = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            image = ec2.copy_image(
                Name=f"Deep Learning Base OSS Nvidia Driver GPU AMI ({system}) {arch}",
                SourceImageId=source,
                SourceRegion=REGION,
            )
            dlami_ids[(arch, system)] = image["ImageId"]
            _owned_by_amazon(image["ImageId"])


def publish_dlami(endpoint: str, system: str = "ubuntu-24.04", arch: str = "x86_64") -> str:
    """AWS releases a newer AMI: register one and point the "latest" parameter at it."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID

    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint, **ADMIN)
    image_id = ec2.copy_image(Name=f"DLAMI {system} {arch} (newer)", SourceImageId=dlami_ids[(arch, system)],
                              SourceRegion=REGION)["ImageId"]  # fmt: skip
    name = DLAMI_PATH.format(arch=arch, os=system)
    versions = ssm_models.ssm_backends[DEFAULT_ACCOUNT_ID][REGION]._parameters[name]
    latest = versions[-1]
    versions.append(
        ssm_models.Parameter(
            account_id=latest.account_id, name=name, value=image_id, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=ssm_models.utcnow(), version=latest.version + 1,
            data_type="aws:ec2:image",
        )
    )  # fmt: skip
    dlami_ids[(arch, system)] = image_id
    _owned_by_amazon(image_id)
    return image_id


# The account AWS publishes the Deep Learning AMIs from; DescribeImages shows its alias "amazon",
# which is the value of ec2:Owner for them (list_amazonec2.html, ec2:Owner).
DLAMI_OWNER = "898082745236"


def _owned_by_amazon(image_id: str) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    image = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].amis[image_id]
    image.owner_id, image.owner_alias = DLAMI_OWNER, "amazon"


# IAM's service prefix where it differs from the signing name moto builds actions from.
IAM_PREFIXES = {"monitoring:": "cloudwatch:"}


def _patch_iam_recording() -> None:
    """Every action moto authorizes, by access key, into called_actions; checked under IAM's name
    for it (cloudwatch:PutMetricAlarm, which moto calls monitoring:PutMetricAlarm)."""
    from moto.iam import access_control

    for request_class in (access_control.IAMRequest, access_control.S3IAMRequest):
        original = request_class.check_action_permitted

        def check(self, resource, original=original):
            for signing, prefix in IAM_PREFIXES.items():
                if self._action.startswith(signing):
                    self._action = prefix + self._action.removeprefix(signing)
            called_actions.setdefault(self._access_key._access_key_id, set()).add(self._action)
            return original(self, resource)

        request_class.check_action_permitted = check


# --- IAM as AWS evaluates it: Resource, Condition and the checks inside other calls -------------
# moto asks about every call with the resource "*" and knows no condition key, so for the users
# made by iam_user() this server decides itself, with tests/iampolicy.py: each call becomes the
# authorization requests AWS makes for it (the action on each resource ARN, with the request's
# context keys), as the Service Authorization Reference defines them for the actions the kit
# calls (docs.aws.amazon.com/service-authorization/latest/reference/: list_amazonec2.html,
# list_awselasticloadbalancingv2.html, list_amazoncloudwatch.html, list_amazonsns.html,
# list_awssystemsmanager.html, list_awsidentityandaccessmanagementiam.html), plus the
# permissions AWS checks on the caller inside a call (below). A call any of whose requests is
# not allowed fails with AccessDenied, naming the action and the resource.

# access key id -> the policies of its user, evaluated by tests/iampolicy.py.
evaluated_policies: dict[str, list[dict]] = {}

# What Elastic Load Balancing checks on the caller inside its own calls (AWS, "Elastic Load
# Balancing API permissions", docs.aws.amazon.com/elasticloadbalancing/latest/userguide/
# elb-api-permissions.html, the 2015-12-01 API); iam:CreateServiceLinkedRole while the account
# has no ELB service-linked role (its first load balancer), modelled in _iam_requests.
ELB_NESTED_EC2 = {
    "CreateLoadBalancer": [
        "DescribeAccountAttributes",
        "DescribeAddresses",
        "DescribeInternetGateways",
        "DescribeSecurityGroups",
        "DescribeSubnets",
        "DescribeVpcs",
    ],
    "CreateTargetGroup": ["DescribeInternetGateways", "DescribeVpcs"],
    "RegisterTargets": ["DescribeInstances", "DescribeInternetGateways", "DescribeSubnets", "DescribeVpcs"],
    "SetIpAddressType": ["DescribeSubnets"],
    "SetSubnets": ["DescribeSubnets"],
}
ELB_SERVICE_LINKED_ROLE = "aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing"
# EC2 resource id prefix -> its ARN's resource type (list_amazonec2.html, "Resource types").
EC2_ID_TYPES = {
    "i-": "instance",
    "sg-": "security-group",
    "vol-": "volume",
    "eni-": "network-interface",
    "subnet-": "subnet",
    "vpc-": "vpc",
    "ami-": "image",
}


def _request_params(request) -> dict:
    """The call's parameters: the query protocol's form (first value of each), or the JSON body."""
    body = request._body or b""
    if body[:1] in (b"{", "{"):
        return json.loads(body)
    return {key: value[0] if isinstance(value, list) else value for key, value in (request._data or {}).items()}


def _indexed(params: dict, prefix: str) -> list:
    """PREFIX.1, PREFIX.2, ... of a query-protocol call: values, or dicts of their fields."""
    found: dict[int, dict | str] = {}
    for key, value in params.items():
        if not key.startswith(prefix + "."):
            continue
        index, _, rest = key[len(prefix) + 1 :].partition(".")
        if not index.isdigit():
            continue
        if rest:
            found.setdefault(int(index), {})[rest] = value  # type: ignore[index]
        else:
            found[int(index)] = value
    return [found[i] for i in sorted(found)]


def _tag_context(tags: dict[str, str]) -> dict:
    """aws:RequestTag/<key> for each tag in the request and aws:TagKeys (list_*.html, global keys)."""
    context: dict = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    return context | ({"aws:TagKeys": list(tags)} if tags else {})


def _resource_tags(tags: dict[str, str]) -> dict:
    return {f"aws:ResourceTag/{key}": value for key, value in tags.items()}


def _iam_requests(request, moto_resource: str) -> list:
    """The authorization requests AWS makes for one call (tests/iampolicy.Request each)."""
    from iampolicy import Request
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends

    action, region, account = request._action, request._region, request.account_id
    service, _, name = action.partition(":")
    params = _request_params(request)
    principal = request._access_key.arn
    base = {"aws:PrincipalAccount": account, "aws:RequestedRegion": region}
    if ":assumed-role/" in principal:  # a role's session: aws:PrincipalArn is the role's ARN, with its path, and
        # aws:username is absent (IAM User Guide, reference_policies_condition-keys.html, aws:PrincipalArn and
        # aws:username)
        base["aws:PrincipalArn"] = iam_backends[account]["aws"].get_role(principal.split("/")[1]).arn
    else:
        base |= {"aws:PrincipalArn": principal, "aws:username": principal.rsplit("/", 1)[-1]}
    found: list = []

    def add(what: str, resource: str = "*", **context) -> None:
        found.append(Request(what, resource, base | context))

    if service == "ec2":
        ec2 = ec2_backends[account][region]

        def arn(resource_id: str) -> str:
            kind = next((t for p, t in EC2_ID_TYPES.items() if resource_id.startswith(p)), "resource")
            return f"arn:aws:ec2:{region}:{'' if kind == 'image' else account}:{kind}/{resource_id}"

        def tags_of(resource_id: str) -> dict:
            return _resource_tags(dict(ec2.tags.get(resource_id, {})))

        def tag_specifications() -> dict[str, dict[str, str]]:
            specs = _indexed(params, "TagSpecification")
            return {
                s.get("ResourceType", ""): {t["Key"]: t.get("Value", "") for t in _indexed(s, "Tag")} for s in specs
            }

        if name == "RunInstances":
            tagged = tag_specifications()
            # ec2_instance passes the subnet and groups in a network interface (NetworkInterface.1...)
            interfaces = _indexed(params, "NetworkInterface")
            subnet = params.get("SubnetId") or next((n["SubnetId"] for n in interfaces if "SubnetId" in n), "")
            add(
                action,
                f"arn:aws:ec2:{region}:{account}:instance/*",
                **{
                    "ec2:InstanceType": params.get("InstanceType", "m1.small"),
                    "ec2:MetadataHttpTokens": params.get("MetadataOptions.HttpTokens", "optional"),
                },
                **_tag_context(tagged.get("instance", {})),
            )
            volumes = [
                m for m in _indexed(params, "BlockDeviceMapping") if "Ebs.VolumeSize" in m or "Ebs.Encrypted" in m
            ]
            for mapping in volumes or [{}]:
                add(
                    action,
                    f"arn:aws:ec2:{region}:{account}:volume/*",
                    **{
                        "ec2:Encrypted": mapping.get("Ebs.Encrypted", "false"),
                        "ec2:VolumeType": mapping.get("Ebs.VolumeType", "gp2"),
                    },
                    **_tag_context(tagged.get("volume", {})),
                )
            add(
                action,
                f"arn:aws:ec2:{region}:{account}:network-interface/*",
                **{"ec2:Subnet": arn(subnet)} if subnet else {},
                **_tag_context(tagged.get("network-interface", {})),
            )
            image_id = params.get("ImageId", "")
            image = ec2.amis.get(image_id)
            owner = ("amazon" if image.owner_alias == "amazon" else image.owner_id) if image else ""
            add(action, arn(image_id), **{"ec2:Owner": owner} if owner else {})
            if subnet:
                add(action, arn(subnet), **tags_of(subnet))
            groups = _indexed(params, "SecurityGroupId") + [
                g for n in interfaces for g in _indexed(n, "SecurityGroupId")
            ]
            for group in groups:
                add(action, arn(group), **tags_of(group))
            if params.get("KeyName"):
                add(action, f"arn:aws:ec2:{region}:{account}:key-pair/{params['KeyName']}")
            for kind, tags in tagged.items():  # tagging on create (list_amazonec2.html, ec2:CreateAction)
                add(
                    "ec2:CreateTags",
                    f"arn:aws:ec2:{region}:{account}:{kind}/*",
                    **{"ec2:CreateAction": name},
                    **_tag_context(tags),
                )
            profile = (
                params.get("IamInstanceProfile.Name") or params.get("IamInstanceProfile.Arn", "").rsplit("/", 1)[-1]
            )
            if profile:  # passing the profile's role to EC2 (list_awsidentityandaccessmanagementiam.html, iam:PassRole)
                iam = iam_backends[account]["aws"]
                with contextlib.suppress(Exception):  # no such profile: RunInstances itself says so
                    for role in iam.get_instance_profile(profile).roles:
                        add("iam:PassRole", role.arn, **{"iam:PassedToService": "ec2.amazonaws.com"})
        elif name == "CreateSecurityGroup":
            tags = tag_specifications().get("security-group", {})
            add(action, f"arn:aws:ec2:{region}:{account}:security-group/*", **_tag_context(tags))
            add(action, arn(params.get("VpcId", "")), **tags_of(params.get("VpcId", "")))
            if tags:
                add(
                    "ec2:CreateTags",
                    f"arn:aws:ec2:{region}:{account}:security-group/*",
                    **{"ec2:CreateAction": name},
                    **_tag_context(tags),
                )
        elif name in (
            "AuthorizeSecurityGroupIngress",
            "RevokeSecurityGroupIngress",
            "AuthorizeSecurityGroupEgress",
            "RevokeSecurityGroupEgress",
            "DeleteSecurityGroup",
            "UpdateSecurityGroupRuleDescriptionsIngress",
        ):
            group = params.get("GroupId", "")
            add(action, arn(group), **tags_of(group))
        elif name == "ModifyInstanceAttribute":
            instance = params.get("InstanceId", "")
            add(action, arn(instance), **tags_of(instance))
            for group in _indexed(params, "GroupId"):
                add(action, arn(group), **tags_of(group))
        elif name in ("StartInstances", "StopInstances", "TerminateInstances", "ModifyInstanceMetadataOptions"):
            for instance in _indexed(params, "InstanceId") or [params.get("InstanceId", "")]:
                add(action, arn(instance), **tags_of(instance))
        elif name in ("CreateTags", "DeleteTags"):
            tags = {t["Key"]: t.get("Value", "") for t in _indexed(params, "Tag")}
            for resource_id in _indexed(params, "ResourceId"):
                add(action, arn(resource_id), **tags_of(resource_id), **_tag_context(tags))
        else:
            add(action)
    elif service == "elasticloadbalancing":
        from moto.elbv2.models import elbv2_backends

        elb = elbv2_backends[account][region]
        prefix = f"arn:aws:elasticloadbalancing:{region}:{account}"

        def tags_of(resource_arn: str) -> dict:
            return _resource_tags(elb.tagging_service.get_tag_dict_for_resource(resource_arn))

        tags = {t["Key"]: t.get("Value", "") for t in _indexed(params, "Tags.member")}
        created = {
            "CreateLoadBalancer": f"{prefix}:loadbalancer/app/{params.get('Name')}/*",
            "CreateTargetGroup": f"{prefix}:targetgroup/{params.get('Name')}/*",
        }
        if name in created:
            add(action, created[name], **_tag_context(tags))
            if tags:  # tagging on create (list_awselasticloadbalancingv2.html, elasticloadbalancing:CreateAction)
                add(
                    "elasticloadbalancing:AddTags",
                    created[name],
                    **{"elasticloadbalancing:CreateAction": name},
                    **_tag_context(tags),
                )
        elif name in ("CreateListener", "CreateRule"):
            parent = params.get("LoadBalancerArn") or params.get("ListenerArn", "")
            add(action, parent, **tags_of(parent), **_tag_context(tags))
            if tags:
                kind = "listener" if name == "CreateListener" else "listener-rule"
                add(
                    "elasticloadbalancing:AddTags",
                    f"{prefix}:{kind}/app/*",
                    **{"elasticloadbalancing:CreateAction": name},
                    **_tag_context(tags),
                )
        elif name in ("AddTags", "RemoveTags"):
            keys = _indexed(params, "TagKeys.member")
            for resource_arn in _indexed(params, "ResourceArns.member"):
                add(
                    action,
                    resource_arn,
                    **tags_of(resource_arn),
                    **(_tag_context(tags) if tags else {"aws:TagKeys": keys}),
                )
        elif name == "SetRulePriorities":
            for rule in _indexed(params, "RulePriorities.member"):
                add(action, rule.get("RuleArn", ""), **tags_of(rule.get("RuleArn", "")))
        elif not name.startswith("Describe"):
            resource_arn = next(
                (params[k] for k in ("LoadBalancerArn", "TargetGroupArn", "ListenerArn", "RuleArn") if k in params), "*"
            )
            add(action, resource_arn, **tags_of(resource_arn))
        else:
            add(action)
        for nested in ELB_NESTED_EC2.get(name, []):
            add(f"ec2:{nested}")
        if name == "CreateLoadBalancer":
            iam = iam_backends[account]["aws"]
            if not _has_elb_service_linked_role(iam):
                add(
                    "iam:CreateServiceLinkedRole",
                    f"arn:aws:iam::{account}:role/{ELB_SERVICE_LINKED_ROLE}",
                    **{"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"},
                )
    elif service == "cloudwatch" and name in ("PutMetricAlarm", "DeleteAlarms"):
        names = params.get("AlarmNames") or _indexed(params, "AlarmNames.member") or [params.get("AlarmName", "")]
        tags = {t["Key"]: t.get("Value", "") for t in params.get("Tags") or _indexed(params, "Tags.member")}
        for alarm in names:
            add(action, f"arn:aws:cloudwatch:{region}:{account}:alarm:{alarm}", **_tag_context(tags))
    elif service == "sns" and name != "ListTopics" and name != "Unsubscribe":
        topic = (
            params.get("TopicArn")
            or params.get("ResourceArn")
            or f"arn:aws:sns:{region}:{account}:{params.get('Name', '')}"
        )
        tags = {t["Key"]: t.get("Value", "") for t in _indexed(params, "Tags.member")}
        add(action, topic, **_tag_context(tags))
        if name == "CreateTopic" and tags:  # CreateTopic with tags needs sns:TagResource too (list_amazonsns.html)
            add("sns:TagResource", topic, **_tag_context(tags))
    elif service == "ssm" and name in ("GetParameter", "GetParameters"):
        for parameter in params.get("Names") or [params.get("Name", "")]:
            owner = "" if parameter.startswith("/aws/") else account  # AWS's public parameters
            add(action, f"arn:aws:ssm:{region}:{owner}:parameter/{parameter.lstrip('/')}")
    elif service == "iam" and name == "GetInstanceProfile":
        add(action, f"arn:aws:iam::{account}:instance-profile/{params.get('InstanceProfileName', '')}")
    elif service == "iam" and name == "GetRole":  # on the role's ARN, path and all (list_awsidentity...iam.html)
        role = next((r for r in iam_backends[account]["aws"].roles.values() if r.name == params.get("RoleName")), None)
        add(action, role.arn if role else f"arn:aws:iam::{account}:role/{params.get('RoleName', '')}")
    elif service == "iam" and name == "SimulatePrincipalPolicy":  # on the user or role simulated (IAM User Guide,
        # access_policies_testing-policies.html: "give Bob access to ... arn:aws:iam::777788889999:user/alice")
        add(action, params.get("PolicySourceArn", ""))
    else:
        add(action, moto_resource or "*")
    return found


def _patch_iam_evaluation() -> None:
    """The users of iam_user() are authorized by tests/iampolicy.py over _iam_requests(), not by moto."""
    import iampolicy
    from moto.core.exceptions import AccessDeniedError
    from moto.iam import access_control

    for request_class in (access_control.IAMRequest, access_control.S3IAMRequest):
        if getattr(request_class, "kit_evaluated", False):
            continue
        previous = request_class.check_action_permitted

        def check(self, resource, previous=previous):
            key = self._access_key._access_key_id
            if key not in evaluated_policies:
                return previous(self, resource)
            for signing, prefix in IAM_PREFIXES.items():
                if self._action.startswith(signing):
                    self._action = prefix + self._action.removeprefix(signing)
            if self._action == "sts:GetCallerIdentity":  # needs no permission (AWS STS API reference)
                called_actions.setdefault(key, set()).add(self._action)
                return None
            for asked in _iam_requests(self, resource):
                called_actions.setdefault(key, set()).add(asked.action)
                decision = iampolicy.evaluate(evaluated_policies[key], asked)
                if not decision.allowed:
                    why = (
                        "with an explicit deny in an identity-based policy"
                        if decision.reason == "explicit deny"
                        else f"because no identity-based policy allows the {asked.action} action"
                    )
                    # AWS's wording (IAM User Guide, troubleshoot_access-denied.html)
                    raise AccessDeniedError(self._access_key.arn, f"{asked.action} on resource: {asked.resource} {why}")
            if self._action == "elasticloadbalancing:CreateLoadBalancer":
                _create_elb_service_linked_role(self.account_id)
            return None

        request_class.check_action_permitted = check
        request_class.kit_evaluated = True


# IAM's policy simulator, which moto lacks (NotImplementedError). IAM "might return fewer than
# MaxItems" with more to come (IAM API Reference, SimulatePrincipalPolicy): this one returns at most
# SIMULATION_PAGE results a page, so a caller that does not follow IsTruncated and Marker misses some.
SIMULATION_PAGE = 10


def principal_policies(account: str, arn: str) -> list[dict] | None:
    """The identity-based policies SimulatePrincipalPolicy includes for the IAM user or role ARN
    (inline and attached, and for a user its groups'); None when IAM has no such entity (a role's
    ARN without its path names none)."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["aws"]
    kind = arn.split(":", 5)[-1].split("/", 1)[0]
    entities = {"user": iam.users.values(), "role": iam.roles.values()}.get(kind, [])
    entity = next((e for e in entities if e.arn == arn), None)
    if entity is None:
        return None
    holders = [entity, *(iam.get_groups_for_user(entity.name) if kind == "user" else [])]
    documents = []
    for holder in holders:
        documents += list(holder.policies.values())
        documents += [v.document for p in holder.managed_policies.values() for v in p.versions if v.is_default]
    return [json.loads(d) if isinstance(d, str) else d for d in documents]


def _simulation_context(entries: list[dict]) -> dict:
    """ContextEntries as tests/iampolicy.py's request context (a list for the ...List types)."""
    return {
        e["ContextKeyName"]: e.get("ContextKeyValues", [])
        if e.get("ContextKeyType", "string").endswith("List")
        else (e.get("ContextKeyValues") or [""])[0]
        for e in entries
    }


def _patch_iam_simulation() -> None:
    """SimulatePrincipalPolicy, decided by tests/iampolicy.py over the principal's own policies: one
    EvaluationResult per action, with ResourceSpecificResults per resource when ResourceArns are
    given (IAM API Reference, EvaluationResult and ResourceSpecificResult). Being allowed to call it
    is decided as for any call (_iam_requests: the action on the simulated user or role)."""
    import iampolicy
    from moto.core.responses import ActionResult
    from moto.iam.exceptions import NotFoundException
    from moto.iam.responses import IamResponse

    decision_names = {"allowed": "allowed", "explicit deny": "explicitDeny", "implicit deny": "implicitDeny"}
    severity = ["allowed", "implicitDeny", "explicitDeny"]

    def simulate_principal_policy(self):
        source = self._get_param("PolicySourceArn")
        policies = principal_policies(self.current_account, source)
        if policies is None:
            raise NotFoundException(f"The principal {source} does not exist.")
        resources = self._get_param("ResourceArns") or []
        context = _simulation_context(self._get_param("ContextEntries") or [])
        results = []
        for action in self._get_param("ActionNames") or []:
            specific = []
            for resource in resources or ["*"]:
                decision = iampolicy.evaluate(policies, iampolicy.Request(action, resource, context))
                specific.append({"EvalResourceName": resource, "EvalResourceDecision": decision_names[decision.reason]})
            result = {
                "EvalActionName": action,
                "EvalResourceName": "*",
                "EvalDecision": max((r["EvalResourceDecision"] for r in specific), key=severity.index),
            }
            if resources:
                result["ResourceSpecificResults"] = specific
            results.append(result)
        start = int(self._get_param("Marker") or 0)
        end = start + min(int(self._get_param("MaxItems") or 100), SIMULATION_PAGE)
        page = {"EvaluationResults": results[start:end], "IsTruncated": end < len(results)}
        return ActionResult(page | ({"Marker": str(end)} if end < len(results) else {}))

    IamResponse.simulate_principal_policy = simulate_principal_policy


def _create_elb_service_linked_role(account: str) -> None:
    """What AWS does on an account's first load balancer: the ELB service-linked role appears."""
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["aws"]
    if not _has_elb_service_linked_role(iam):
        iam.create_service_linked_role("elasticloadbalancing.amazonaws.com", "", "")


def _has_elb_service_linked_role(iam) -> bool:
    return any(role.path == "/aws-service-role/elasticloadbalancing.amazonaws.com/" for role in iam.roles.values())


# The control node's policy the kit ships: the tests' playbooks run as a user holding only it.
CONTROL_NODE_POLICY = kit.REPO / "docs/aws-iam/control-node-policy.json"
# access key id -> IAM actions the test server authorized for it.
called_actions: dict[str, set[str]] = {}


# What each AWS test file's playbooks called, for the test that compares the policy with all of
# it. tests/run.sh runs the files in two lanes (two processes): they meet in KIT_RUN_DIR.
calls_by_file: dict[str, set[str]] = {}


def ran_in_full(config) -> bool:
    """Whether pytest runs whole files (no -k, -m or ::test selection)."""
    options = config.option
    return not (options.keyword or options.markexpr or any("::" in arg for arg in config.args))


def save_calls(file: str, actions: set[str]) -> None:
    calls_by_file[file] = set(actions)
    if run_dir := os.environ.get("KIT_RUN_DIR"):
        (Path(run_dir) / f"aws-calls-{file}.json").write_text(json.dumps(sorted(actions)))


def saved_calls(file: str, timeout: float = 1800) -> set[str] | None:
    """FILE's calls from this process, or from the other lane (waiting for it up to TIMEOUT s);
    None when FILE does not run in this test run."""
    if file in calls_by_file:
        return calls_by_file[file]
    if not (run_dir := os.environ.get("KIT_RUN_DIR")):
        return None
    path = Path(run_dir) / f"aws-calls-{file}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{file} recorded no calls in {timeout} s (it runs in the other lane)")
        time.sleep(10)
    return set(json.loads(path.read_text()))


# Credentials with every permission, for the tests' own calls once IAM is enforced.
ADMIN = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def listed(element) -> list:
    """A policy element as a list (IAM allows one string for one value)."""
    return element if isinstance(element, list) else [element]


def policy_actions(policy: dict) -> set[str]:
    """Every action POLICY's statements name."""
    return {action for statement in policy["Statement"] for action in listed(statement["Action"])}


def iam_user(endpoint: str, name: str, policy: dict) -> dict[str, str]:
    """A user holding POLICY alone (made before IAM is enforced), authorized as AWS would
    (_patch_iam_evaluation); its credentials as boto3 takes them."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint, **ADMIN)
    name = f"{name}-{os.urandom(3).hex()}"  # the server's state outlives it in this process
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    evaluated_policies[key["AccessKeyId"]] = [policy]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def iam_role_session(endpoint: str, name: str, policy: dict, path: str = "/") -> dict[str, str]:
    """A session of a role at PATH holding POLICY alone, as an SSO user or anyone who assumed a role
    calls: GetCallerIdentity gives arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION, without the
    path. Authorized as AWS would (_patch_iam_evaluation); its credentials as boto3 takes them."""
    iam = boto3.client("iam", region_name=REGION, endpoint_url=endpoint, **ADMIN)
    name = f"{name}-{os.urandom(3).hex()}"
    trust = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
    document = json.dumps({"Version": "2012-10-17", "Statement": [trust]})
    role = iam.create_role(RoleName=name, Path=path, AssumeRolePolicyDocument=document)["Role"]
    iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    sts = boto3.client("sts", region_name=REGION, endpoint_url=endpoint, **ADMIN)
    session = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="operator")["Credentials"]
    evaluated_policies[session["AccessKeyId"]] = [policy]
    return {
        "aws_access_key_id": session["AccessKeyId"],
        "aws_secret_access_key": session["SecretAccessKey"],
        "aws_session_token": session["SessionToken"],
    }


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int | None = None) -> tuple[ThreadedMotoServer, str]:
    """Start the server in this process; returns it and its endpoint URL."""
    _patch_load_balancer_attributes()
    _patch_load_balancer_rules()
    _patch_volumes()
    _patch_dlami_parameters()
    _patch_targets()
    _patch_s3_action_names()
    _patch_iam_recording()
    _patch_iam_evaluation()
    _patch_iam_simulation()
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    if not targets.running:
        targets.running = True
        threading.Thread(target=targets.run, daemon=True).start()
    endpoint = f"http://127.0.0.1:{port}"
    _register_dlamis(endpoint)
    return server, endpoint


def client_env(endpoint: str, credentials: dict[str, str]) -> dict[str, str]:
    """What the kit's AWS code needs to talk to this server (CREDENTIALS, one region)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": credentials["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": credentials["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    } | ({"AWS_SESSION_TOKEN": credentials["aws_session_token"]} if "aws_session_token" in credentials else {})


CLIENT_CIDRS = ["0.0.0.0/0"]
ADMIN_CIDRS = ["203.0.113.0/24"]
# The Prometheus servers: the test hosts' own setting (inventory/local), which a run that sets
# it again as an extra variable then leaves as it is.
MONITORING_CIDRS = [f"{kit.MONITORING_IP}/32"]
UNKNOWN_CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0000-1111-2222-333344445555"


class Aws:
    """The test server, a VPC with two subnets and an ACM certificate, and a way to run playbooks."""

    def __init__(
        self,
        alb_time_scale: float = 1 / 3,
        drain_time_scale: float | None = None,
        draining_register: str = "cancels",
        deregistration_lag: float = 0.0,
    ):
        """alb_time_scale: the test ALB's time against AWS's (1/3: health checks every 5 s instead of
        15, a 900 s deregistration delay lasts 300 s); drain_time_scale: the deregistration
        delay's alone, when it differs; draining_register and deregistration_lag:
        DRAINING_REGISTER and DEREGISTRATION_LAG (seconds)."""
        global ALB_TIME_SCALE, DRAIN_TIME_SCALE, DRAINING_REGISTER, DEREGISTRATION_LAG
        assert draining_register in ("cancels", "ignored"), draining_register
        DRAINING_REGISTER, DEREGISTRATION_LAG = draining_register, deregistration_lag
        ALB_TIME_SCALE = alb_time_scale
        DRAIN_TIME_SCALE = alb_time_scale if drain_time_scale is None else drain_time_scale
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # setting up, as the account's owner
        self.server, self.endpoint = start()
        options = {"region_name": REGION, "endpoint_url": self.endpoint}
        global ADMIN
        ADMIN = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ADMIN = iam_user(self.endpoint, "kit-test-admin", everything)
        options |= ADMIN
        # The kit's playbooks run as a user holding only the policy the kit ships.
        policy = json.loads(CONTROL_NODE_POLICY.read_text())
        self.credentials = iam_user(self.endpoint, "kit-control-node", policy)
        # Whose calls are the kit's (called()): this user's, and a test's role session's.
        self.kit_keys = {self.credentials["aws_access_key_id"]}
        self.env = client_env(self.endpoint, self.credentials)
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here on, every call is authorized as on AWS
        self.ec2 = boto3.client("ec2", **options)
        self.elb = boto3.client("elbv2", **options)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # As a VPC is laid out for a load balancer: a public subnet per zone for it (public
        # addresses on launch), a private one per zone for the hosts.
        self.subnets = [self.subnet(f"10.0.{i}.0/24", zone, public=True) for i, zone in ((1, "a"), (2, "b"))]
        self.private_subnets = [self.subnet(f"10.0.{i}.0/24", zone) for i, zone in ((11, "a"), (12, "b"))]
        self.s3 = boto3.client("s3", **options)
        self.cloudwatch = boto3.client("cloudwatch", **options)
        self.sns = boto3.client("sns", **options)
        self.certificate = self.import_certificate(boto3.client("acm", **options))

    def subnet(self, cidr: str, zone: str, public: bool = False, vpc: str | None = None) -> str:
        """A subnet of the VPC (or VPC) in us-east-1ZONE."""
        subnet = self.ec2.create_subnet(VpcId=vpc or self.vpc, CidrBlock=cidr, AvailabilityZone=f"us-east-1{zone}")
        subnet_id = subnet["Subnet"]["SubnetId"]
        self.ec2.modify_subnet_attribute(SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": public})
        return subnet_id

    @staticmethod
    def import_certificate(acm) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "inference.test")])
        now = datetime.datetime.now(datetime.UTC)
        builder = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        cert = builder.serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
        pem = cert.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return acm.import_certificate(Certificate=pem, PrivateKey=private)["CertificateArn"]

    def settings(self, **extra) -> dict:
        return {
            "aws_vpc_id": self.vpc,
            "aws_subnet_ids": self.subnets,
            "aws_instances_subnet_ids": self.private_subnets,
            "aws_load_balancer_certificate_arn": self.certificate,
            "aws_network_client_cidrs": CLIENT_CIDRS,
            "aws_network_admin_cidrs": ADMIN_CIDRS,
            "inference_metrics_allowed_cidrs": MONITORING_CIDRS,
        } | extra

    def playbook(
        self,
        *args: str,
        playbook: str = "playbooks/aws.yml",
        secrets: Path | None = None,
        inventory=None,
        credentials: dict | None = None,
        **extra,
    ):
        """Run PLAYBOOK as the control node's user (or with CREDENTIALS)."""
        env = kit.ansible_env() | self.env | (client_env(self.endpoint, credentials) if credentials else {})
        hosts = ["-i", str(inventory)] if inventory else kit.inventory_args()
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), *hosts, playbook]
        cmd += ["-e", f"@{secrets}"] if secrets else []
        cmd += ["-e", json.dumps(self.settings(**extra))]
        proc = subprocess.run([*cmd, *args], cwd=kit.REPO, env=env, capture_output=True, text=True)
        return kit.Run(proc.returncode, proc.stdout + proc.stderr)

    def check_cases(self, cases: dict[str, dict], directory: Path, inference: dict | None = None) -> kit.Run:
        """aws.yml's checks once for CASES (inventory host name -> its settings over self.settings()),
        each case an inventory host that is the control node (tests/playbooks/aws_checks.yml); with
        INFERENCE (host name -> its variables), those hosts as the inventory's inference group."""
        python = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hosts = {name: python | self.settings(**settings) for name, settings in cases.items()}  # above group_vars/
        inventory = directory / "aws-cases.json"
        inventory.write_text(json.dumps({"aws_cases": {"hosts": hosts}, "inference": {"hosts": inference or {}}}))
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory)]
        cmd += ["tests/playbooks/aws_checks.yml"]
        env = kit.ansible_env() | self.env
        proc = subprocess.run(cmd, cwd=kit.REPO, env=env, capture_output=True, text=True)
        return kit.Run(proc.returncode, proc.stdout + proc.stderr)

    def inventory(self) -> dict:
        ansible_inventory = Path(sys.executable).parent / "ansible-inventory"
        proc = subprocess.run(
            [str(ansible_inventory), "-i", "inventory/aws_ec2.yml", "--list"],
            cwd=kit.REPO, env=kit.ansible_env() | self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return json.loads(proc.stdout)

    def instances(self, fleet: str = "inference") -> list[dict]:
        filters = [{"Name": "tag:inference-kit:fleet", "Values": [fleet]},
                   {"Name": "instance-state-name", "Values": ["pending", "running"]}]  # fmt: skip
        return [i for r in self.ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]

    def run_instance(self) -> str:
        """An instance the kit did not launch (no fleet tag)."""
        image = dlami_ids[("x86_64", "ubuntu-24.04")]
        found = self.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=self.private_subnets[0])
        return found["Instances"][0]["InstanceId"]

    def called(self) -> set[str]:
        """The IAM actions the kit's playbooks called so far."""
        return set().union(*(called_actions.get(key, set()) for key in self.kit_keys))

    def target_events(self, since: int = 0) -> list[tuple[str, str, str]]:
        """(target, from state, to state) of every change after the first SINCE."""
        with targets.lock:
            return list(targets.events[since:])

    def routed(self, name: str) -> dict[str, str]:
        """ "<id>:<port>" -> "healthy" for each target of target group NAME that the load balancer
        still sends new requests to (TargetStates.routed: DescribeTargetHealth says draining at
        once, while the nodes route to it for DEREGISTRATION_LAG more seconds)."""
        group = self.elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
        from moto.core import DEFAULT_ACCOUNT_ID

        backend = elbv2_models.elbv2_backends[DEFAULT_ACCOUNT_ID][REGION]
        return dict.fromkeys(targets.routed(backend.target_groups[group]), "healthy")

    def targets(self, name: str) -> dict[str, str]:
        """ "<id>:<port>" -> health state of every target of target group NAME."""
        group = self.elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
        found = self.elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
        return {f"{t['Target']['Id']}:{t['Target']['Port']}": t["TargetHealth"]["State"] for t in found}

    def groups(self, name: str) -> dict:
        found = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])["SecurityGroups"]
        return {group["GroupName"]: group for group in found if group["GroupName"].startswith(name)}
