"""The AWS side against the test AWS server (moto on 127.0.0.1, gaps filled in tests/awsmock.py)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import awsmock
import boto3
import pytest

import kit

CLIENT_CIDRS = ["0.0.0.0/0"]
ADMIN_CIDRS = ["203.0.113.0/24"]
UNKNOWN_CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0000-1111-2222-333344445555"


class Aws:
    """The test server, a VPC with two subnets and an ACM certificate, and a way to run playbooks."""

    def __init__(self):
        self.server, self.endpoint = awsmock.start()
        self.env = awsmock.client_env(self.endpoint)
        options = {"region_name": awsmock.REGION, "endpoint_url": self.endpoint}
        options |= {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        self.ec2 = boto3.client("ec2", **options)
        self.elb = boto3.client("elbv2", **options)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [
            self.ec2.create_subnet(VpcId=self.vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")[
                "Subnet"
            ]["SubnetId"]
            for i, zone in ((1, "a"), (2, "b"))
        ]
        self.certificate = self.import_certificate(boto3.client("acm", **options))

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
            "aws_load_balancer_certificate_arn": self.certificate,
            "aws_network_client_cidrs": CLIENT_CIDRS,
            "aws_network_admin_cidrs": ADMIN_CIDRS,
        } | extra

    def playbook(self, *args: str, **extra) -> kit.Run:
        env = kit.ansible_env() | self.env
        cmd = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "playbooks/aws.yml",
            "-e",
            json.dumps(self.settings(**extra)),
        ]
        proc = subprocess.run([*cmd, *args], cwd=kit.REPO, env=env, capture_output=True, text=True)
        return kit.Run(proc.returncode, proc.stdout + proc.stderr)

    def groups(self, name: str) -> dict:
        found = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])["SecurityGroups"]
        return {group["GroupName"]: group for group in found if group["GroupName"].startswith(name)}


@pytest.fixture(scope="module")
def aws():
    environment = Aws()
    yield environment
    environment.server.stop()


@pytest.fixture(scope="module")
def created(aws):
    run = aws.playbook()
    assert run.rc == 0, run.output[-4000:]
    return run


def test_create_from_nothing_then_nothing_changes(aws, created):
    assert created.recap("localhost")["changed"] > 0
    again = aws.playbook()
    assert again.rc == 0 and again.recap("localhost")["changed"] == 0, again.output[-3000:]
    check = aws.playbook("--check", "--diff")
    assert check.rc == 0 and check.recap("localhost")["changed"] == 0, check.output[-3000:]


def test_security_group_rules_are_exactly_as_specified(aws, created):
    groups = aws.groups("inference-")
    alb, hosts = groups["inference-alb"], groups["inference-hosts"]
    listener_rules = sorted(
        (p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in alb["IpPermissions"]
    )
    assert listener_rules == [(80, 80, CLIENT_CIDRS), (443, 443, CLIENT_CIDRS)]
    host_rules = {(p["FromPort"], p["ToPort"]): p for p in hosts["IpPermissions"]}
    assert set(host_rules) == {(8000, 8007), (22, 22)}
    assert [pair["GroupId"] for pair in host_rules[(8000, 8007)]["UserIdGroupPairs"]] == [alb["GroupId"]]
    assert host_rules[(8000, 8007)]["IpRanges"] == []
    assert [r["CidrIp"] for r in host_rules[(22, 22)]["IpRanges"]] == ADMIN_CIDRS


def test_the_listeners_forward_only_v1(aws, created):
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
    listeners = {
        listener["Port"]: listener
        for listener in aws.elb.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    }
    assert set(listeners) == {80, 443}
    https = listeners[443]
    assert https["Protocol"] == "HTTPS" and https["Certificates"][0]["CertificateArn"] == aws.certificate
    assert https["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    rules = [r for r in aws.elb.describe_rules(ListenerArn=https["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert [(r["Conditions"][0]["Values"], r["Actions"][0]["Type"]) for r in rules] == [(["/v1/*"], "forward")]
    redirect = listeners[80]["DefaultActions"][0]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS"


def test_target_group_and_load_balancer_settings(aws, created):
    group = aws.elb.describe_target_groups(Names=["inference"])["TargetGroups"][0]
    assert (group["HealthCheckPath"], group["HealthCheckIntervalSeconds"], group["HealthCheckTimeoutSeconds"]) == (
        "/ready",
        15,
        5,
    )
    attributes = {
        a["Key"]: a["Value"]
        for a in aws.elb.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])["Attributes"]
    }
    assert attributes["load_balancing.algorithm.type"] == "least_outstanding_requests"
    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    balancer = aws.elb.describe_load_balancers(Names=["inference"])["LoadBalancers"][0]
    lb_attributes = aws.elb.describe_load_balancer_attributes(LoadBalancerArn=balancer["LoadBalancerArn"])["Attributes"]
    assert {a["Key"]: a["Value"] for a in lb_attributes}["idle_timeout.timeout_seconds"] == "900"


BAD_INPUTS = [
    ({"aws_vpc_id": ""}, "needs aws_vpc_id"),
    ({"aws_subnet_ids": ["subnet-0123456789abcdef0"]}, "at least two subnets"),
    (
        {"aws_load_balancer_certificate_arn": "my-cert"},
        'aws_load_balancer_certificate_arn is "my-cert", not an ACM certificate ARN',
    ),
    ({"aws_load_balancer_certificate_arn": UNKNOWN_CERTIFICATE}, "has no issued certificate"),
    ({"aws_network_admin_cidrs": ["0.0.0.0/0"]}, "opens SSH to the whole internet"),
    ({"aws_network_admin_cidrs": ["10.0.0.0/8", "10.1.0.0/16"]}, "10.1.0.0/16 inside 10.0.0.0/8"),
    ({"aws_network_admin_cidrs": ["10.0.0.1/8"]}, "not network ranges in CIDR form"),
    ({"aws_load_balancer_idle_timeout": 60}, "The timeouts do not fit together"),
    ({"aws_load_balancer_health_check_timeout": 15}, "must be below"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[json.dumps(e) for e, _ in BAD_INPUTS])
def test_bad_input_fails_before_anything_is_created(aws, extra, message):
    name = "bad-" + os.urandom(3).hex()
    run = aws.playbook(**{"aws_name": name, **extra})
    assert run.rc != 0 and message in run.output, run.output[-3000:]
    assert aws.groups(name) == {}
    assert not [g for g in aws.elb.describe_target_groups()["TargetGroups"] if g["TargetGroupName"] == name]
