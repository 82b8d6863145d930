"""The AWS side against the test AWS server (moto on 127.0.0.1, gaps filled in tests/awsmock.py),
without a host: what aws.yml creates, changes, refuses and tears down. Registration and site.yml
with the test host as the fleet's instance: tests/test_5_aws_registration.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awsmock
import boto3
import botocore.exceptions
import pytest
from traffic import wait_for

import kit

CLIENT_CIDRS, ADMIN_CIDRS, UNKNOWN_CERTIFICATE = awsmock.CLIENT_CIDRS, awsmock.ADMIN_CIDRS, awsmock.UNKNOWN_CERTIFICATE
MONITORING_CIDRS = awsmock.MONITORING_CIDRS


@pytest.fixture(scope="module")
def aws(request):
    environment = awsmock.Aws()
    yield environment
    environment.server.stop()
    if awsmock.ran_in_full(request.config):  # for the policy test, in tests/test_5_aws_registration.py
        awsmock.save_calls("test_5_aws", environment.called())


FLEET = {"aws_instances_count": 3}


@pytest.fixture(scope="module")
def created(aws):
    """aws.yml's run that creates the fleet, and the "latest" DLAMI it launched from."""
    image = awsmock.dlami_ids[("x86_64", "ubuntu-24.04")]
    run = aws.playbook(**FLEET)
    assert run.rc == 0, run.output[-4000:]
    return run, image


def test_create_from_nothing_then_nothing_changes_even_when_a_newer_ami_is_out(aws, created):
    created, _ = created
    assert created.recap("localhost")["changed"] > 0
    # IAM was asked first (roles/aws_permissions), as the kit's user, about every call: the policy allows them.
    assert created.said("IAM allows all") and created.said("calls of this run to arn:aws:iam::123456789012:user/kit-")
    # The "latest" DLAMI moves on every release; the fleet is found by its tag, not by its AMI.
    before = {i["InstanceId"] for i in aws.instances()}
    awsmock.publish_dlami(aws.endpoint)
    again = aws.playbook(**FLEET)
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]
    assert {i["InstanceId"] for i in aws.instances()} == before
    check = aws.playbook("--check", "--diff", **FLEET)
    assert check.rc == 0 and check.recap("localhost")["changed"] == 0, check.output[-3000:]


def test_check_on_an_empty_account_shows_the_changes_and_creates_nothing(aws):
    preview = aws.playbook("--check", "--diff", aws_name="preview", **FLEET)
    assert preview.rc == 0 and preview.recap("localhost")["changed"] == 5, preview.output[-3000:]
    assert "Would launch 3 x g6e.xlarge" in preview.output
    assert aws.groups("preview-") == {} and aws.instances("preview") == []
    assert "preview" not in [g["TargetGroupName"] for g in aws.elb.describe_target_groups()["TargetGroups"]]


def test_security_group_rules_are_exactly_as_specified(aws, created):
    groups = aws.groups("inference-")
    alb, hosts = groups["inference-alb"], groups["inference-hosts"]
    listener_rules = sorted(
        (p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in alb["IpPermissions"]
    )
    assert listener_rules == [(443, 443, CLIENT_CIDRS)]
    host_rules = {(p["FromPort"], p["ToPort"]): p for p in hosts["IpPermissions"]}
    assert set(host_rules) == {(8000, 8007), (22, 22), (9500, 9500)}
    assert [pair["GroupId"] for pair in host_rules[(8000, 8007)]["UserIdGroupPairs"]] == [alb["GroupId"]]
    assert host_rules[(8000, 8007)]["IpRanges"] == []
    assert [r["CidrIp"] for r in host_rules[(22, 22)]["IpRanges"]] == ADMIN_CIDRS
    # the metrics listener: the monitoring ranges only, never the load balancer
    assert [r["CidrIp"] for r in host_rules[(9500, 9500)]["IpRanges"]] == MONITORING_CIDRS
    assert host_rules[(9500, 9500)]["UserIdGroupPairs"] == []


def test_the_listener_forwards_only_v1_over_tls_with_the_post_quantum_policy(aws, created):
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
    listeners = {
        listener["Port"]: listener
        for listener in aws.elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    }
    assert set(listeners) == {443}, "no plain-HTTP listener unless asked: its 301 turns POSTs into GETs"
    https = listeners[443]
    assert https["Protocol"] == "HTTPS" and https["Certificates"][0]["CertificateArn"] == aws.certificate
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
    assert https["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    rules = [r for r in aws.elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert [(r["Conditions"][0]["Values"], r["Actions"][0]["Type"]) for r in rules] == [(["/v1/*"], "forward")]


def test_the_http_redirect_access_logs_and_deletion_protection_when_asked(aws):
    bucket = "kit-logs"
    aws.s3.create_bucket(Bucket=bucket)
    settings = {
        "aws_name": "kept",
        "aws_load_balancer_http_listener": True,
        "aws_load_balancer_deletion_protection": True,
        "aws_load_balancer_access_logs_bucket": bucket,
    }
    denied = aws.playbook(**settings)
    assert denied.rc != 0, denied.output[-3000:]
    assert denied.said(f'"{bucket}" must be an S3 bucket in us-east-1'), denied.output[-3000:]
    assert denied.said("and a bucket policy that lets the load balancer write")
    assert aws.groups("kept-") == {}
    statement = {"Effect": "Allow", "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                 "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/kept/AWSLogs/*"}  # fmt: skip
    aws.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}))
    run = aws.playbook(**settings)
    assert run.rc == 0, run.output[-3000:]
    balancer = aws.elb.describe_load_balancers(Names=["kept"])["LoadBalancers"][0]["LoadBalancerArn"]
    listeners = {item["Port"]: item for item in aws.elb.describe_listeners(LoadBalancerArn=balancer)["Listeners"]}
    redirect = listeners[80]["DefaultActions"][0]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    attributes = aws.elb.describe_load_balancer_attributes(LoadBalancerArn=balancer)["Attributes"]
    attributes = {a["Key"]: a["Value"] for a in attributes}
    assert (attributes["access_logs.s3.enabled"], attributes["access_logs.s3.bucket"]) == ("true", bucket)
    assert attributes["access_logs.s3.prefix"] == "kept" and attributes["deletion_protection.enabled"] == "true"
    again = aws.playbook(**settings)
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]
    refused = aws.playbook(playbook="playbooks/aws_teardown.yml", aws_name="kept", aws_teardown_confirm="kept")
    assert refused.rc != 0 and refused.said("Load balancer kept has deletion protection on, so nothing was removed")
    assert "kept" in [b["LoadBalancerName"] for b in aws.elb.describe_load_balancers()["LoadBalancers"]]


def test_plain_http_serves_port_80_only_until_https_redirects_it(aws):
    run = aws.playbook(aws_name="plain", aws_load_balancer_plain_http=True, aws_load_balancer_certificate_arn="")
    assert run.rc == 0, run.output[-3000:]
    assert [(p["FromPort"], p["ToPort"]) for p in aws.groups("plain-")["plain-alb"]["IpPermissions"]] == [(80, 80)]
    balancer = aws.elb.describe_load_balancers(Names=["plain"])["LoadBalancers"][0]["LoadBalancerArn"]
    listeners = aws.elb.describe_listeners(LoadBalancerArn=balancer)["Listeners"]
    assert [(listener["Port"], listener["Protocol"]) for listener in listeners] == [(80, "HTTP")]
    rules = [r for r in aws.elb.describe_rules(ListenerArn=listeners[0]["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert [(r["Conditions"][0]["Values"], r["Actions"][0]["Type"]) for r in rules] == [(["/v1/*"], "forward")]
    # Then HTTPS with port 80 redirecting: the API is no longer served in plain text there.
    https = aws.playbook(aws_name="plain", aws_load_balancer_http_listener=True)
    assert https.rc == 0, https.output[-3000:]
    listeners = {item["Port"]: item for item in aws.elb.describe_listeners(LoadBalancerArn=balancer)["Listeners"]}
    assert listeners[80]["DefaultActions"][0]["Type"] == "redirect" and listeners[443]["Protocol"] == "HTTPS"
    assert [r["IsDefault"] for r in aws.elb.describe_rules(ListenerArn=listeners[80]["ListenerArn"])["Rules"]] == [True]


def test_target_group_and_load_balancer_settings(aws, created):
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]
    checks = ("HealthCheckPath", "HealthCheckIntervalSeconds", "HealthCheckTimeoutSeconds")
    thresholds = ("HealthyThresholdCount", "UnhealthyThresholdCount")
    # Every 5 s, out after 2 failures: a host whose engine died leaves within about 10 s.
    assert tuple(group[k] for k in checks + thresholds) == ("/ready", 5, 4, 2, 2)
    attributes = {
        a["Key"]: a["Value"]
        for a in aws.elb.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])["Attributes"]
    }
    assert attributes["load_balancing.algorithm.type"] == "least_outstanding_requests"
    assert attributes["deregistration_delay.timeout_seconds"] == "900"
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
    lb_attributes = aws.elb.describe_load_balancer_attributes(LoadBalancerArn=balancer["LoadBalancerArn"])["Attributes"]
    assert {a["Key"]: a["Value"] for a in lb_attributes}["idle_timeout.timeout_seconds"] == "930"


# name suffix -> (metric, statistic, comparison, threshold, unit, dimensions, periods, datapoints, missing data)
ALARMS = {
    "unhealthy-targets": ("UnHealthyHostCount", "Maximum", "GreaterThanThreshold", 0, "Count", 2, 3, 3, "notBreaching"),
    "healthy-targets-low": ("HealthyHostCount", "Minimum", "LessThanThreshold", 1, "Count", 2, 3, 3, "breaching"),
    "target-5xx": ("HTTPCode_Target_5XX_Count", "Sum", "GreaterThanThreshold", 5, "Count", 2, 5, 3, "notBreaching"),
    "load-balancer-5xx": ("HTTPCode_ELB_5XX_Count", "Sum", "GreaterThanThreshold", 5, "Count", 1, 5, 3, "notBreaching"),
    "response-time-p99": ("TargetResponseTime", "p99", "GreaterThanThreshold", 60, "Seconds", 2, 5, 3, "notBreaching"),
}


def alarms(aws, fleet: str = "inference") -> dict[str, dict]:
    found = aws.cloudwatch.describe_alarms(AlarmNamePrefix=f"{fleet}-")["MetricAlarms"]
    return {a["AlarmName"].removeprefix(f"{fleet}-"): a for a in found}


def test_cloudwatch_alarms_watch_the_load_balancer_and_its_target_group(aws, created):
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]["LoadBalancerArn"]
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]["TargetGroupArn"]
    # CloudWatch's dimension values: the ARNs' ends, app/<name>/<id> and targetgroup/<name>/<id>.
    dimensions = [
        {"Name": "LoadBalancer", "Value": balancer.split(":loadbalancer/")[1]},
        {"Name": "TargetGroup", "Value": group.split(":")[-1]},
    ]
    found = alarms(aws)
    # The floor alarm waits for the first registration: HealthyHostCount reads 0 until then.
    assert set(found) == set(ALARMS) - {"healthy-targets-low"}
    assert aws.targets("inference") == {}
    for name, (metric, statistic, comparison, threshold, unit, dims, periods, points, missing) in ALARMS.items():
        if name not in found:
            continue
        alarm = found[name]
        assert alarm["Namespace"] == "AWS/ApplicationELB" and alarm["MetricName"] == metric, name
        assert alarm.get("Statistic", alarm.get("ExtendedStatistic")) == statistic, name
        assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["Unit"]) == (comparison, threshold, unit), name
        assert sorted(alarm["Dimensions"], key=lambda d: d["Name"]) == dimensions[:dims], name
        assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (60, periods, points), name
        assert alarm["TreatMissingData"] == missing and alarm["AlarmActions"] == [], name
    assert found["response-time-p99"]["EvaluateLowSampleCountPercentile"] == "ignore"


def test_instances_are_launched_as_specified(aws, created):
    _, image = created
    instances = aws.instances()
    assert len(instances) == 3
    first, second = aws.private_subnets
    assert sorted(i["SubnetId"] for i in instances) == sorted([first, first, second])
    for instance in instances:
        assert instance["ImageId"] == image
        assert instance["InstanceType"] == "g6e.xlarge"
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert [g["GroupName"] for g in instance["SecurityGroups"]] == ["inference-hosts"]
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags["inference-kit:fleet"] == "inference" and tags["inference-kit:gpus"] == "1"
        root = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        volume = aws.ec2.describe_volumes(VolumeIds=[root])["Volumes"][0]
        assert (volume["Size"], volume["VolumeType"], volume["Encrypted"]) == (300, "gp3", True)
        assert (volume["Iops"], volume["Throughput"]) == (3000, 500)


# Changes the running fleet cannot take: fewer instances (or the same number moved between subnets)
# without aws_instances_allow_scale_in, and what AWS would not apply to it in place.
TERMINATES = "the run would terminate 1 there"
REFUSED_CHANGES = {
    "fewer instances": ({"aws_instances_count": 2}, TERMINATES),
    "subnets reordered": ({"aws_instances_subnet_ids": "<private subnets reversed>"}, TERMINATES),
    "instance type": ({"aws_instances_type": "g6e.2xlarge"}, "the run would stop, resize and start each one"),
    "root volume": ({"aws_instances_root_volume_size": 400}, "which apply only to instances launched from now on"),
    "load balancer scheme": ({"aws_load_balancer_scheme": "internal"}, "AWS cannot change the scheme"),
}
THROUGH_AWS_YML_ON_THE_FLEET = "instance type"


@pytest.fixture(scope="module")
def refused_changes(aws, created, tmp_path_factory):
    """aws.yml's checks once for every refused change (each an inventory host, as for the bad inputs),
    aws.yml itself for one, and the fleet before and after them."""

    def fleet() -> tuple:
        balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
        return {i["InstanceId"]: (i["InstanceType"], i["State"]["Name"]) for i in aws.instances()}, balancer["Scheme"]

    reversed_subnets = {"<private subnets reversed>": aws.private_subnets[::-1]}
    cases = {
        name: FLEET | {key: reversed_subnets.get(value, value) for key, value in change.items()}
        for name, (change, _) in REFUSED_CHANGES.items()
    }
    before = fleet()
    checks = aws.check_cases(
        {name.replace(" ", "-"): settings for name, settings in cases.items()}, tmp_path_factory.mktemp("refused")
    )
    through_aws_yml = aws.playbook(**cases[THROUGH_AWS_YML_ON_THE_FLEET])
    return kit.failures(checks.output), checks, through_aws_yml, before, fleet()


@pytest.mark.parametrize(
    ("name", "message"), [(name, message) for name, (_, message) in REFUSED_CHANGES.items()], ids=list(REFUSED_CHANGES)
)
def test_changes_the_running_fleet_cannot_take_are_refused_and_change_nothing(refused_changes, name, message):
    by_case, checks, through_aws_yml, before, after = refused_changes
    refusal = " ".join(by_case.get(name.replace(" ", "-"), "").split())
    assert checks.rc != 0 and message in refusal, checks.output[-3000:]
    if name == THROUGH_AWS_YML_ON_THE_FLEET:
        assert through_aws_yml.rc != 0 and through_aws_yml.said(message), through_aws_yml.output[-3000:]
    assert after == before and after[1] == "internet-facing" and len(after[0]) == 3


# Settings a serving fleet may change in place: the rules' ranges, the TLS policy, the health
# checks and the tags.
CHANGED = {
    "aws_network_client_cidrs": ["198.51.100.0/24"],
    "aws_network_admin_cidrs": ["192.0.2.0/24"],
    "aws_load_balancer_ssl_policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "aws_load_balancer_health_check_interval": 30,
    "aws_tags": {"Project": "inference-kit", "Team": "ml-platform"},
}


ONCALL = {"aws_alarms_sns_subscriptions": [{"protocol": "email", "endpoint": "oncall@example.com"}]}


@pytest.fixture(scope="module")
def changed_in_place(aws, created):
    """The serving fleet (a target registered and healthy) through three runs: CHANGED, a subnet in
    a third zone, an on-call topic and a higher floor; the same again; back to FLEET, with one
    instance stopped by hand before it. What each left behind, for the tests below."""
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]["TargetGroupArn"]
    target = f"{aws.instances()[0]['InstanceId']}:{kit.GATEWAY_PORT}"
    aws.elb.register_targets(TargetGroupArn=group, Targets=[{"Id": target.split(":")[0], "Port": kit.GATEWAY_PORT}])
    # From a first healthy target on, the floor alarm is made, and stays.
    wait_for(lambda: aws.targets("inference") == {target: "healthy"}, 60, "the target to be healthy")
    instances = {i["InstanceId"] for i in aws.instances()}
    third_zone = aws.subnet("10.0.4.0/24", "c", public=True)
    settings = FLEET | CHANGED | ONCALL | {"aws_alarms_min_healthy_targets": 2}
    settings["aws_subnet_ids"] = [*aws.subnets, third_zone]
    changed = aws.playbook(**settings)
    assert changed.rc == 0 and changed.recap("localhost")["changed"] > 0, changed.output[-3000:]
    topic = next(t["TopicArn"] for t in aws.sns.list_topics()["Topics"] if t["TopicArn"].endswith(":inference-alarms"))
    state = {
        "changed": (applied(aws), balancer_subnets(aws), alarms(aws)),
        "topic": topic,
        "subscriptions": aws.sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"],
        "topic tags": {t["Key"]: t["Value"] for t in aws.sns.list_tags_for_resource(ResourceArn=topic)["Tags"]},
        "third zone": third_zone,
        "subnets": set(aws.subnets),
    }
    state["again"] = aws.playbook(**settings)
    stopped = aws.instances()[0]["InstanceId"]
    aws.ec2.stop_instances(InstanceIds=[stopped])
    aws.ec2.get_waiter("instance_stopped").wait(InstanceIds=[stopped], WaiterConfig={"Delay": 1})
    back = aws.playbook(**FLEET)
    assert back.rc == 0 and back.recap("localhost")["changed"] > 0, back.output[-3000:]
    reservations = aws.ec2.describe_instances(InstanceIds=[stopped])["Reservations"]
    state["back"] = (applied(aws), balancer_subnets(aws), alarms(aws))
    state["stopped instance"] = reservations[0]["Instances"][0]["State"]["Name"]
    state["instances"] = (instances, {i["InstanceId"] for i in aws.instances()})
    return state


def test_changed_settings_are_applied_to_the_running_fleet_in_place_and_back(changed_in_place):
    (settings, subnets, _), again = changed_in_place["changed"], changed_in_place["again"]
    assert settings == (["198.51.100.0/24"], ["192.0.2.0/24"], "ELBSecurityPolicy-TLS13-1-2-2021-06", 30, True)
    assert changed_in_place["third zone"] in subnets
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]
    settings, subnets, _ = changed_in_place["back"]
    assert settings == (CLIENT_CIDRS, ADMIN_CIDRS, "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09", 5, False)
    assert subnets == changed_in_place["subnets"]
    before, after = changed_in_place["instances"]
    assert after == before


def test_alarms_notify_an_sns_topic_the_kit_creates_and_follow_changed_thresholds(changed_in_place):
    topic, subscriptions = changed_in_place["topic"], changed_in_place["subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [("email", "oncall@example.com")]
    assert changed_in_place["topic tags"]["inference-kit:fleet"] == "inference"
    found = changed_in_place["changed"][2]
    assert {name: (a["AlarmActions"], a["OKActions"]) for name, a in found.items()} == {
        name: ([topic], [topic]) for name in ALARMS
    }
    assert found["healthy-targets-low"]["Threshold"] == 2
    back = changed_in_place["back"][2]
    assert {name: a["AlarmActions"] for name, a in back.items()} == {name: [] for name in ALARMS}
    assert back["healthy-targets-low"]["Threshold"] == 1


def test_an_instance_stopped_by_hand_is_started_again(changed_in_place):
    assert changed_in_place["stopped instance"] in ("pending", "running")
    before, after = changed_in_place["instances"]
    assert after == before and len(after) == 3


def balancer_subnets(aws) -> set[str]:
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
    return {zone["SubnetId"] for zone in balancer["AvailabilityZones"]}


def applied(aws) -> tuple:
    """The fleet's client and SSH ranges, TLS policy, health-check interval, and whether every
    resource carries the Team tag."""
    groups = aws.groups("inference-")
    clients = [r["CidrIp"] for p in groups["inference-alb"]["IpPermissions"] for r in p["IpRanges"]]
    host_rules = groups["inference-hosts"]["IpPermissions"]
    ssh = [r["CidrIp"] for p in host_rules if p["FromPort"] == 22 for r in p["IpRanges"]]
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]["LoadBalancerArn"]
    listener = aws.elb.describe_listeners(LoadBalancerArn=balancer)["Listeners"][0]
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]
    tags = [{t["Key"] for t in i["Tags"]} for i in aws.instances()]
    tags += [{t["Key"] for t in g.get("Tags", [])} for g in groups.values()]
    arns = [balancer, group["TargetGroupArn"]]
    tags += [{t["Key"] for t in d["Tags"]} for d in aws.elb.describe_tags(ResourceArns=arns)["TagDescriptions"]]
    tagged = {"Team" in keys for keys in tags}
    assert len(tagged) == 1, tags
    return clients, ssh, listener["SslPolicy"], group["HealthCheckIntervalSeconds"], tagged.pop()


def test_hosts_reached_through_session_manager_get_no_ssh_and_the_ssm_inventory_names_them_by_id(aws):
    iam = boto3.client("iam", region_name=awsmock.REGION, endpoint_url=aws.endpoint, **awsmock.ADMIN)
    # The policy passes only roles named inference-kit-* (docs/aws.md).
    trust = {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    iam.create_role(
        RoleName="inference-kit-hosts",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]}),
    )
    iam.create_instance_profile(InstanceProfileName="kit-hosts")
    iam.add_role_to_instance_profile(InstanceProfileName="kit-hosts", RoleName="inference-kit-hosts")
    aws.s3.create_bucket(Bucket="kit-ssm")
    settings = {
        "aws_name": "viassm",
        "aws_instances_count": 1,
        "aws_instances_connection": "ssm",
        "aws_instances_instance_profile": "kit-hosts",
        "aws_ssm_bucket": "kit-ssm",
        "aws_network_admin_cidrs": [],
    }
    run = aws.playbook(**settings)
    assert run.rc == 0, run.output[-3000:]
    assert sorted((p["FromPort"], p["ToPort"]) for p in aws.groups("viassm-")["viassm-hosts"]["IpPermissions"]) == [
        (8000, 8007),
        (9500, 9500),
    ]
    (instance,) = aws.instances("viassm")
    assert instance["IamInstanceProfile"]["Arn"].endswith("/kit-hosts")
    env = kit.ansible_env() | aws.env | {"INFERENCE_KIT_FLEET": "viassm"}
    command = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", "inventory/ssm", "--host"]
    host = subprocess.run([*command, instance["InstanceId"]], cwd=kit.REPO, env=env, capture_output=True, text=True)
    assert host.returncode == 0, host.stderr
    hostvars = json.loads(host.stdout)
    assert plain(hostvars["ansible_connection"]) == "amazon.aws.aws_ssm", hostvars


def test_the_aws_ec2_inventory_finds_the_fleet_by_tag(aws, created):
    stranger = aws.run_instance()
    inventory = aws.inventory()
    hostvars = inventory["_meta"]["hostvars"]
    fleet = {i["PrivateIpAddress"]: i["InstanceId"] for i in aws.instances()}
    assert sorted(inventory["inference"]["hosts"]) == sorted(fleet)
    assert {host: plain(hostvars[host]["instance_id"]) for host in fleet} == fleet
    assert {hostvars[host]["inference_host_expected_gpus"] for host in fleet} == {1}
    assert stranger not in [plain(hostvars[host]["instance_id"]) for host in hostvars]


def plain(value):
    """A string from ansible-inventory's JSON, which wraps untrusted strings as {"__ansible_unsafe": ...}."""
    return value["__ansible_unsafe"] if isinstance(value, dict) else value


# Each bad input with the message it must get. "<...>" values name subnets the bad_input_runs
# fixture makes: a second public one in the load balancer's first zone, a private one in a zone
# the load balancer does not serve and that does not offer g6e (us-east-1e), one in another VPC.
BAD_INPUTS = [
    ({"aws_vpc_id": ""}, "needs aws_vpc_id"),
    ({"aws_subnet_ids": ["subnet-0123456789abcdef0"]}, "at least two subnets"),
    ({"aws_subnet_ids": ["<public a>", "<public a 2>"]}, "one subnet per zone"),
    ({"aws_name": "internal-api"}, 'aws_name "internal-api" names the load balancer and the target group'),
    ({"aws_name": "a" * 33}, "AWS takes 1 to 32 letters, digits and hyphens"),
    (
        {"aws_load_balancer_certificate_arn": "my-cert"},
        'aws_load_balancer_certificate_arn is "my-cert", not an ACM certificate ARN',
    ),
    ({"aws_load_balancer_certificate_arn": UNKNOWN_CERTIFICATE}, "has no issued certificate"),
    ({"aws_load_balancer_access_logs_bucket": "no-such-bucket"}, '"no-such-bucket" must be an S3 bucket in us-east-1'),
    ({"aws_network_admin_cidrs": ["0.0.0.0/0"]}, "opens SSH to the whole internet"),
    ({"aws_network_admin_cidrs": ["10.0.0.0/8", "10.1.0.0/16"]}, "10.1.0.0/16 inside 10.0.0.0/8"),
    ({"aws_network_admin_cidrs": ["10.0.0.1/8"]}, "not network ranges in CIDR form"),
    ({"inference_metrics_allowed_cidrs": ["::/0"]}, "opens the hosts' metrics to the whole internet"),
    ({"aws_load_balancer_idle_timeout": 60}, "The timeouts do not fit together"),
    ({"aws_load_balancer_deregistration_delay": 600}, "at least the drain and the longest generation"),
    ({"aws_load_balancer_health_check_timeout": 15}, "must be below"),
    ({"aws_instances_count": 1, "aws_instances_type": "p5.48xlarge"}, '"p5.48xlarge" must be a g6e size'),
    ({"aws_instances_count": 1, "aws_instances_ubuntu_version": "20.04"}, 'ubuntu_version "20.04" one of'),
    ({"aws_instances_count": 1, "aws_instances_image_id": "ami-0123456789abcdef0"}, "is not available in us-east-1"),
    ({"aws_instances_count": 1, "aws_instances_root_volume_size": 1}, "is smaller than the root snapshot of the AMI"),
    ({"aws_instances_count": 1, "aws_instances_root_volume_throughput": 1000}, "at most a quarter of the IOPS"),
    ({"aws_instances_count": 1, "aws_network_admin_cidrs": []}, "SSH to the instances is closed"),
    ({"aws_instances_count": 1, "aws_instances_subnet_ids": []}, "aws_instances_subnet_ids is empty"),
    ({"aws_instances_count": 1, "aws_instances_subnet_ids": ["<public a>"]}, "gives its instances public addresses"),
    (
        {"aws_instances_count": 1, "aws_instances_subnet_ids": ["<private e>"]},
        "where the load balancer has no subnet",
    ),
    ({"aws_instances_count": 1, "aws_instances_subnet_ids": ["<private e>"]}, "which does not offer g6e.xlarge"),
    ({"aws_instances_count": 1, "aws_instances_subnet_ids": ["<other vpc>"]}, "not in the load balancer's vpc-"),
    ({"aws_instances_count": 1, "aws_instances_key_name": "nokey"}, 'There is no key pair "nokey" in us-east-1'),
    ({"aws_subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]}, "must be subnets of vpc-"),
    ({"aws_instances_count": 1, "aws_instances_connection": "telnet"}, 'aws_instances_connection is "telnet"'),
    ({"aws_instances_count": 1, "aws_instances_connection": "ssm"}, "ssm needs aws_instances_instance_profile"),
    (
        {
            "aws_instances_count": 1,
            "aws_instances_connection": "ssm",
            "aws_instances_instance_profile": "kit-hosts",
            "aws_ssm_bucket": "<versioned bucket>",
        },  # fmt: skip
        "must be an S3 bucket in us-east-1 without versioning",
    ),
    ({"aws_alarms_min_healthy_targets": 0}, "aws_alarms_min_healthy_targets at least 1"),
    ({"aws_alarms_response_time_p99_seconds": "1m"}, "aws_alarms_response_time_p99_seconds 1m"),
    ({"aws_alarms_sns_subscriptions": [{"protocol": "pager", "endpoint": "x"}]}, "the protocol one of"),
    ({"aws_alarms_sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:ops"}, "an existing topic in us-east-1"),
    (
        {"aws_name": "foreign", "aws_alarms_sns_subscriptions": [{"protocol": "email", "endpoint": "a@example.com"}]},
        "There is an SNS topic foreign-alarms in us-east-1 that the kit did not create",
    ),
]


# Each as aws.yml sees it: refused before anything is created.
THROUGH_AWS_YML = [0, 6, 15]  # no VPC, an unknown certificate, a size that is not a g6e


@pytest.fixture(scope="module")
def bad_input_runs(aws, tmp_path_factory):
    """aws.yml's checks once for all bad inputs: an inventory with one host per input, each the
    control node with that input in its host variables (tests/playbooks/aws_checks.yml), each under
    its own aws_name; and aws.yml itself for a few."""
    other_vpc = aws.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        "<public a>": aws.subnets[0],
        "<public a 2>": aws.subnet("10.0.3.0/24", "a", public=True),
        "<private e>": aws.subnet("10.0.15.0/24", "e"),
        "<other vpc>": aws.subnet("10.9.1.0/24", "a", vpc=other_vpc),
    }

    aws.sns.create_topic(Name="foreign-alarms")  # someone else's, of the name the kit would give its topic
    aws.s3.create_bucket(Bucket="kit-ssm-versioned")
    aws.s3.put_bucket_versioning(Bucket="kit-ssm-versioned", VersioningConfiguration={"Status": "Enabled"})
    subnets["<versioned bucket>"] = "kit-ssm-versioned"

    def resolve(value):
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return subnets.get(value, value) if isinstance(value, str) else value

    cases = {
        f"case-{i:02d}": {"aws_name": "bad-" + os.urandom(3).hex()} | {k: resolve(v) for k, v in extra.items()}
        for i, (extra, _) in enumerate(BAD_INPUTS)
    }
    checks = aws.check_cases(cases, tmp_path_factory.mktemp("aws-cases"))
    by_case = kit.failures(checks.output)
    runs = {
        json.dumps(extra) + message: (cases[f"case-{i:02d}"]["aws_name"], kit.Run(1, by_case.get(f"case-{i:02d}", "")))
        for i, (extra, message) in enumerate(BAD_INPUTS)
    }

    def run(i: int) -> tuple[str, kit.Run]:
        settings = cases[f"case-{i:02d}"]
        return settings["aws_name"], aws.playbook(**settings)

    with ThreadPoolExecutor(max_workers=len(THROUGH_AWS_YML)) as pool:
        through_aws_yml = dict(zip(THROUGH_AWS_YML, pool.map(run, THROUGH_AWS_YML), strict=True))
    return runs, through_aws_yml, checks


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[json.dumps(e) for e, _ in BAD_INPUTS])
def test_bad_input_fails_before_anything_is_created(aws, bad_input_runs, extra, message):
    runs, _, checks = bad_input_runs
    name, run = runs[json.dumps(extra) + message]
    assert run.said(message), run.output[-3000:] or checks.output[-3000:]
    assert aws.groups(name) == {} and aws.groups(extra.get("aws_name", name)) == {}
    groups = [g["TargetGroupName"] for g in aws.elb.describe_target_groups()["TargetGroups"]]
    assert name not in groups and extra.get("aws_name", name) not in groups


def test_aws_yml_stops_at_its_checks_and_creates_nothing(aws, bad_input_runs):
    _, through_aws_yml, _ = bad_input_runs
    for i, (name, run) in through_aws_yml.items():
        extra, message = BAD_INPUTS[i]
        assert run.rc != 0 and run.said(message), run.output[-3000:]
        assert "AWS | Security groups" not in run.output, f"{extra}: aws.yml went on past its checks"
        assert aws.groups(name) == {} and aws.instances(name) == []
        groups = [g["TargetGroupName"] for g in aws.elb.describe_target_groups()["TargetGroups"]]
        assert name not in groups


def test_hosts_allowing_other_monitoring_ranges_than_the_security_group_are_refused(aws, tmp_path):
    """The security group takes the control node's inference_metrics_allowed_cidrs, each host's
    nginx its own: set for the inference group only, the two would differ."""
    cases = {"case-metrics": {"aws_name": "bad-metrics"}}
    run = aws.check_cases(cases, tmp_path, inference={"gpu-1": {"inference_metrics_allowed_cidrs": ["10.9.9.0/24"]}})
    assert run.rc != 0 and "differs for gpu-1" in run.output, run.output[-3000:]
    assert "Set it in group_vars/all" in run.output


# A deregistration delay the test ALB lets pass in 10 s, with timeouts that fit it.
SHORT_DRAIN = {
    "aws_load_balancer_deregistration_delay": 30,
    "inference_gateway_request_timeout": 30,
    "inference_engine_shutdown_timeout": 30,
    "aws_load_balancer_idle_timeout": 60,
    "inference_gateway_keepalive_timeout": 90,
}


def test_scale_in_terminates_the_chosen_instances_only_after_the_load_balancer_is_done_with_them(
    aws, created, tmp_path
):
    fleet = aws.instances()
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]["TargetGroupArn"]
    targets = [{"Id": i["InstanceId"], "Port": port} for i in fleet for port in (8000, 8001)]
    aws.elb.register_targets(TargetGroupArn=group, Targets=targets)
    wait_for(lambda: set(aws.targets("inference").values()) == {"healthy"}, 60, "the targets to be healthy")
    # Two subnets, two instances: the first subnet's newer instance goes.
    first_subnet = [i for i in fleet if i["SubnetId"] == aws.private_subnets[0]]
    leaving = max(first_subnet, key=lambda i: (i["LaunchTime"], i["InstanceId"]))["InstanceId"]
    events = len(aws.target_events())
    hosts_file = tmp_path / "known_hosts"  # the kit forgets the key of the instance it terminates
    known_hosts(hosts_file, [i["PrivateIpAddress"] for i in fleet])
    run = aws.playbook(aws_instances_count=2, aws_instances_allow_scale_in=True,
                       aws_instances_known_hosts_file=str(hosts_file), **SHORT_DRAIN)  # fmt: skip
    assert run.rc == 0, run.output[-3000:]
    assert known_addresses(hosts_file) == {i["PrivateIpAddress"] for i in fleet if i["InstanceId"] != leaving}
    assert run.said(f"Scale-in: {leaving} leave the load balancer, then terminate.")
    assert sorted(i["InstanceId"] for i in aws.instances()) == sorted(
        i["InstanceId"] for i in fleet if i["InstanceId"] != leaving
    )
    happened = aws.target_events(events)
    for port in (8000, 8001):
        target = f"{leaving}:{port}"
        drained = happened.index((target, "healthy", "draining"))
        done = happened.index((target, "draining", "unused"))
        assert drained < done < happened.index((leaving, "running", "terminated")), happened
    assert set(aws.targets("inference").values()) == {"healthy"} and len(aws.targets("inference")) == 4
    again = aws.playbook(aws_instances_count=2, aws_instances_allow_scale_in=True, **SHORT_DRAIN)
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]


def test_register_rolling_and_service_refuse_hosts_of_another_fleet_before_anything_changes(aws, created, tmp_path):
    """The inventory's fleet (INFERENCE_KIT_FLEET) unset, -e aws_name naming another: the hosts'
    instances carry the other fleet's tag, and nothing may put them into aws_name's target group."""
    other = aws.run_instance()
    aws.ec2.create_tags(Resources=[other], Tags=[{"Key": "inference-kit:fleet", "Value": "other"}])
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "instance_id": other}
    inventory = tmp_path / "other-fleet.json"
    inventory.write_text(json.dumps({"inference": {"hosts": {"stranger": host}}}))
    before = aws.targets("inference")
    for playbook, args in [
        ("playbooks/register.yml", []),
        ("playbooks/rolling.yml", []),
        ("playbooks/service.yml", ["-e", "action=restart"]),
    ]:
        run = aws.playbook(*args, playbook=playbook, inventory=inventory, aws_enabled=True)
        assert run.rc != 0, (playbook, run.output[-3000:])
        assert run.said(f"stranger ({other}) is tagged inference-kit:fleet=other."), (playbook, run.output[-3000:])
        assert run.said("This run acts on the fleet aws_name=inference") and run.said("Nothing was changed.")
        assert "Preflight | Check the settings" not in run.output, playbook
    assert aws.targets("inference") == before


def test_an_access_log_bucket_of_another_account_is_accepted_and_sse_kms_refused_before_anything_is_created(aws):
    """The bucket itself is asked, not the caller's bucket list: a central log archive of another
    account is valid; default encryption SSE-KMS is not (access logs support SSE-S3 only)."""
    from moto.s3.models import s3_backends

    archive = "central-log-archive"
    s3_backends["111122223333"]["aws"].create_bucket(archive, "us-east-1")
    statement = {"Effect": "Allow", "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                 "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{archive}/*"}  # fmt: skip
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]}).encode()
    s3_backends["111122223333"]["aws"].put_bucket_policy(archive, policy)
    assert archive not in [b["Name"] for b in aws.s3.list_buckets()["Buckets"]]
    run = aws.playbook(aws_name="central", aws_load_balancer_access_logs_bucket=archive)
    assert run.rc == 0, run.output[-3000:]
    balancer = aws.elb.describe_load_balancers(Names=["central"])["LoadBalancers"][0]["LoadBalancerArn"]
    attributes = aws.elb.describe_load_balancer_attributes(LoadBalancerArn=balancer)["Attributes"]
    assert {a["Key"]: a["Value"] for a in attributes}["access_logs.s3.bucket"] == archive
    encrypted = "kit-logs-kms"
    aws.s3.create_bucket(Bucket=encrypted)
    aws.s3.put_bucket_policy(Bucket=encrypted, Policy=policy.decode().replace(archive, encrypted))
    kms = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}
    aws.s3.put_bucket_encryption(Bucket=encrypted, ServerSideEncryptionConfiguration={"Rules": [kms]})
    refused = aws.playbook(aws_name="kms", aws_load_balancer_access_logs_bucket=encrypted)
    assert refused.rc != 0
    assert refused.said("with SSE-S3 default encryption (it has aws:kms"), refused.output[-3000:]
    assert aws.groups("kms-") == {}
    assert "kms" not in [b["LoadBalancerName"] for b in aws.elb.describe_load_balancers()["LoadBalancers"]]


@pytest.mark.parametrize("draining_register", ["cancels", "ignored"])
def test_a_target_registered_while_draining_ends_up_registered_whatever_aws_does_with_the_drain(aws, draining_register):
    """RegisterTargets on a draining instance target: AWS documents neither that it cancels the
    drain nor that it is ignored until the drain ends; the kit's module handles both."""
    name = f"redrain-{draining_register}"
    vpc = {"VpcId": aws.vpc, "Protocol": "HTTP", "Port": kit.GATEWAY_PORT, "TargetType": "instance"}
    fleet = [{"Key": "inference-kit:fleet", "Value": "inference"}]  # the policy's writes need the fleet tag
    group = aws.elb.create_target_group(Name=name, HealthCheckIntervalSeconds=5, Tags=fleet, **vpc)["TargetGroups"][0]
    arn = group["TargetGroupArn"]
    # 30 s, 10 s at the test's time scale
    delay = [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}]
    aws.elb.modify_target_group_attributes(TargetGroupArn=arn, Attributes=delay)
    balancer = aws.elb.create_load_balancer(Name=name, Subnets=aws.subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    forward = [{"Type": "forward", "TargetGroupArn": arn}]
    aws.elb.create_listener(LoadBalancerArn=balancer, Protocol="HTTP", Port=80, DefaultActions=forward)
    instance = aws.run_instance()
    target = f"{instance}:{kit.GATEWAY_PORT}"
    aws.elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance, "Port": kit.GATEWAY_PORT}])
    wait_for(lambda: aws.targets(name) == {target: "healthy"}, 30, "the target to be healthy")
    aws.elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": instance, "Port": kit.GATEWAY_PORT}])
    assert aws.targets(name) == {target: "draining"}
    awsmock.DRAINING_REGISTER = draining_register
    try:
        events = len(aws.target_events())
        run = aws.playbook(playbook="tests/playbooks/register_targets.yml", group=name, targets=[target],
                           draining_timeout=60)  # fmt: skip
    finally:
        awsmock.DRAINING_REGISTER = "cancels"
    assert run.rc == 0, run.output[-3000:]
    happened = [(was, now) for t, was, now in aws.target_events(events) if t == target]
    if draining_register == "cancels":
        assert run.said("waited for drain: none") and happened[0] == ("draining", "initial"), happened
    else:  # still draining: the module waited for the drain to end and registered it again
        assert run.said(f"waited for drain: {target}"), run.output[-3000:]
        assert happened[:2] == [("draining", "unused"), ("unused", "initial")], happened
    wait_for(lambda: aws.targets(name) == {target: "healthy"}, 30, "the target to be healthy again")


def test_the_policy_lets_the_kit_touch_only_its_fleet(aws, created):
    """The control node's policy, evaluated with its Resource and Condition parts as AWS would
    (tests/iampolicy.py): what the kit does is allowed, the same on what is not the fleet's is not."""
    options = {"region_name": awsmock.REGION, "endpoint_url": aws.endpoint, **aws.credentials}
    ec2, elb = boto3.client("ec2", **options), boto3.client("elbv2", **options)
    foreign = aws.elb.create_target_group(Name="foreign", Protocol="HTTP", Port=80, VpcId=aws.vpc)
    foreign_group = foreign["TargetGroups"][0]["TargetGroupArn"]
    aws.elb.add_tags(ResourceArns=[foreign_group], Tags=[{"Key": "owner", "Value": "someone"}])
    foreign_balancer = aws.elb.create_load_balancer(Name="foreign", Subnets=aws.subnets)["LoadBalancers"][0]
    other = aws.ec2.create_security_group(GroupName="foreign", Description="not the kit's", VpcId=aws.vpc)["GroupId"]
    instance = aws.run_instance()
    fleet = [{"Key": "inference-kit:fleet", "Value": "inference"}]
    refused = {
        "elasticloadbalancing:AddTags": lambda: elb.add_tags(ResourceArns=[foreign_balancer["LoadBalancerArn"]],
                                                             Tags=fleet),
        "elasticloadbalancing:RegisterTargets": lambda: elb.register_targets(TargetGroupArn=foreign_group,
                                                                             Targets=[{"Id": instance}]),
        "elasticloadbalancing:ModifyLoadBalancerAttributes": lambda: elb.modify_load_balancer_attributes(
            LoadBalancerArn=foreign_balancer["LoadBalancerArn"],
            Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "30"}]),
        "ec2:AuthorizeSecurityGroupIngress": lambda: ec2.authorize_security_group_ingress(
            GroupId=other, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                                           "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
        "ec2:ModifyInstanceAttribute": lambda: ec2.modify_instance_attribute(InstanceId=instance,
                                                                             DisableApiTermination={"Value": True}),
        "ec2:TerminateInstances": lambda: ec2.terminate_instances(InstanceIds=[instance]),
        "ec2:CreateTags": lambda: ec2.create_tags(Resources=[instance], Tags=fleet),
    }  # fmt: skip
    image, subnet = awsmock.dlami_ids[("x86_64", "ubuntu-24.04")], aws.private_subnets[0]
    hosts = aws.groups("inference-")["inference-hosts"]["GroupId"]

    def launch(instance_type="g6e.xlarge", tags=fleet, groups=(hosts,), http_tokens="required", encrypted=True):
        specs = [{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")] if tags else []
        return ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type, SubnetId=subnet,
            SecurityGroupIds=list(groups), TagSpecifications=specs, MetadataOptions={"HttpTokens": http_tokens},
            BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 200, "Encrypted": encrypted}}],
        )["Instances"][0]["InstanceId"]  # fmt: skip

    refused |= {
        "ec2:RunInstances on instance/* (ec2:InstanceType)": lambda: launch(instance_type="p5.48xlarge"),
        "ec2:RunInstances on instance/* (no fleet tag)": lambda: launch(tags=[]),
        "ec2:RunInstances on security-group/": lambda: launch(groups=(other,)),
        "ec2:RunInstances on instance/* (IMDSv1)": lambda: launch(http_tokens="optional"),
        "ec2:RunInstances on volume/* (unencrypted)": lambda: launch(encrypted=False),
    }
    for what, call in refused.items():
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied", what
        action, _, rest = what.partition(" on ")
        assert f"perform: {action}" in str(denied.value), (what, str(denied.value))
        assert rest.split(" (")[0] in str(denied.value), (what, str(denied.value))
    launched = launch()  # the same launch as the kit's is allowed
    aws.ec2.terminate_instances(InstanceIds=[launched, instance])


def test_teardown_removes_what_the_kit_created_and_only_that(aws, created, tmp_path):
    stranger = aws.run_instance()
    other = aws.ec2.create_security_group(GroupName="inference-alb-copy", Description="not the kit's", VpcId=aws.vpc)
    aws.cloudwatch.put_metric_alarm(
        AlarmName="inference-by-hand", Namespace="AWS/ApplicationELB", MetricName="RequestCount", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=1000, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    fleet = {i["InstanceId"] for i in aws.instances()}
    refused = aws.playbook(playbook="playbooks/aws_teardown.yml")
    assert refused.rc != 0 and "-e aws_teardown_confirm=inference" in refused.output
    assert {i["InstanceId"] for i in aws.instances()} == fleet
    hosts_file = tmp_path / "known_hosts"
    addresses = [i["PrivateIpAddress"] for i in aws.instances()]
    known_hosts(hosts_file, [*addresses, "10.0.99.1"])
    run = aws.playbook(playbook="playbooks/aws_teardown.yml", aws_teardown_confirm="inference",
                       aws_instances_known_hosts_file=str(hosts_file))  # fmt: skip
    assert run.rc == 0, run.output[-3000:]
    assert known_addresses(hosts_file) == {"10.0.99.1"}, "the terminated instances' host keys are still known"
    assert aws.instances() == [] and list(aws.groups("inference-")) == ["inference-alb-copy"]
    assert "inference" not in [b["LoadBalancerName"] for b in aws.elb.describe_load_balancers()["LoadBalancers"]]
    assert "inference" not in [g["TargetGroupName"] for g in aws.elb.describe_target_groups()["TargetGroups"]]
    assert list(alarms(aws)) == ["by-hand"]
    assert not [t for t in aws.sns.list_topics()["Topics"] if t["TopicArn"].endswith(":inference-alarms")]
    kept = aws.ec2.describe_instances(InstanceIds=[stranger])["Reservations"][0]["Instances"][0]
    assert kept["State"]["Name"] == "running"
    assert other["GroupId"] in [g["GroupId"] for g in aws.ec2.describe_security_groups()["SecurityGroups"]]
    again = aws.playbook(playbook="playbooks/aws_teardown.yml", aws_teardown_confirm="inference")
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]


def test_a_policy_without_one_action_the_kit_calls_stops_the_checks_naming_it_and_creates_nothing(aws):
    """IAM, asked before anything is created (SimulatePrincipalPolicy), names each call the caller may
    not make with its resource; without that, the run created the security groups, then failed at
    CreateTargetGroup. The caller is a role's session (as with SSO), its role at a path the session
    ARN lacks: the simulation asks about the role, found by name (iam:GetRole)."""
    short = awsmock.iam_role_session(aws.endpoint, "kit-short", without({"elasticloadbalancing:CreateTargetGroup"}),
                                     path="/kit/operators/")  # fmt: skip
    aws.kit_keys.add(short["aws_access_key_id"])  # its calls are the kit's (the policy test compares them)
    run = aws.playbook(aws_name="short", aws_instances_count=1, credentials=short)
    assert run.rc != 0, run.output[-3000:]
    role = "arn:aws:iam::123456789012:role/kit/operators/kit-short-"
    assert run.said("IAM denies 1 of this run's") and run.said(f"calls to {role}"), run.output[-3000:]
    target_groups = f"arn:aws:elasticloadbalancing:{awsmock.REGION}:123456789012:targetgroup/short/*"
    assert run.said(f"- elasticloadbalancing:CreateTargetGroup on {target_groups} (no policy of the principal allows")
    assert run.said("Attach docs/aws-iam/control-node-policy.json of this kit version")
    assert "AWS | Security groups" not in run.output and aws.groups("short-") == {} and aws.instances("short") == []


def test_a_caller_iam_will_not_simulate_for_is_warned_and_the_run_goes_on_unless_that_is_required(aws):
    nosim = awsmock.iam_user(aws.endpoint, "kit-nosim", without({"iam:SimulatePrincipalPolicy"}))
    aws.kit_keys.add(nosim["aws_access_key_id"])
    unchecked = {"aws_name": "unchecked", "aws_permissions_required": True}
    with ThreadPoolExecutor(max_workers=2) as pool:
        warned = pool.submit(aws.playbook, "--check", credentials=nosim, aws_name="unwatched", **FLEET)
        stopped = pool.submit(aws.playbook, credentials=nosim, **unchecked)
    warned, stopped = warned.result(), stopped.result()
    refusal = "may not call iam:SimulatePrincipalPolicy on arn:aws:iam::123456789012:user/kit-nosim-"
    assert warned.rc == 0 and warned.said("Would launch 3 x g6e.xlarge"), warned.output[-3000:]
    assert warned.said("[WARNING]: IAM did not simulate this run's AWS calls:") and warned.said(refusal)
    assert stopped.rc != 0 and stopped.said(refusal), stopped.output[-3000:]
    assert stopped.said("aws_permissions_required is true, so the run stops here, having created nothing")
    assert aws.groups("unchecked-") == {}


def known_hosts(path, addresses) -> None:
    """A known-hosts file with a key for each of ADDRESSES."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path.write_text("".join(f"{address} {line}\n" for address in addresses))


def known_addresses(path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def without(actions: set[str]) -> dict:
    """The control node's policy less ACTIONS."""
    policy = json.loads(awsmock.CONTROL_NODE_POLICY.read_text())
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in awsmock.listed(statement["Action"]) if a not in actions]
    policy["Statement"] = [s for s in policy["Statement"] if s["Action"]]
    return policy


@pytest.mark.parametrize(
    ("missing", "call"),
    [
        ("ec2:DescribeInternetGateways", "CreateTargetGroup"),  # the first ELB call that checks it
        ("ec2:DescribeAddresses", "CreateLoadBalancer"),
        ("iam:CreateServiceLinkedRole", "CreateLoadBalancer"),  # a new account's first load balancer
    ],
)
def test_the_ec2_permissions_elb_checks_inside_its_calls_are_in_the_policy(aws, missing, call):
    """AWS, "Elastic Load Balancing API permissions": CreateLoadBalancer, CreateTargetGroup and
    RegisterTargets check EC2 permissions on the caller; the test server does too."""
    iam = boto3.client("iam", region_name=awsmock.REGION, endpoint_url=aws.endpoint, **awsmock.ADMIN)
    linked = iam.list_roles(PathPrefix="/aws-service-role/elasticloadbalancing.amazonaws.com/")["Roles"]
    for role in linked:  # as on a new account, whose first load balancer creates the role
        iam.delete_service_linked_role(RoleName=role["RoleName"])
    short = awsmock.iam_user(aws.endpoint, "kit-short", without({missing}))
    name = "nested-" + os.urandom(3).hex()
    # Without the simulation, which would name the missing permission before the call (the test
    # above): here the test server's nested checks are what is under test.
    run = aws.playbook(aws_name=name, credentials=short, aws_permissions_enabled=False)
    assert run.rc != 0, run.output[-3000:]
    assert run.said(f"perform: {missing}"), run.output[-3000:]
    assert run.said(call), run.output[-3000:]
    assert name not in [b["LoadBalancerName"] for b in aws.elb.describe_load_balancers()["LoadBalancers"]]
