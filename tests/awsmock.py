"""An AWS-compatible API on 127.0.0.1 for the tests: moto in server mode, with moto's gaps filled.

The kit's AWS code runs unchanged against it through AWS_ENDPOINT_URL. What moto lacks, and
this module adds (in the test server, never in the roles):

- the load-balancer attributes real AWS returns (moto leaves out idle_timeout.timeout_seconds,
  which amazon.aws.elb_application_lb then fails on with a KeyError);
- the Deep Learning Base AMI's public SSM parameters (/aws/service/deeplearning/...), each
  pointing at an AMI registered in moto's EC2, since /aws/ names cannot be created through the API;
- optionally, target health that follows a real HTTP probe: a target whose address is known
  (probe_targets) is healthy only while GET <its URL><health check path> answers a matcher code,
  as an ALB would judge it. Moto's own targets are healthy at once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import boto3
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


def _probe(url: str, matcher: str, timeout: float) -> bool:
    codes = {int(code) for code in matcher.split(",") if code.strip().isdigit()}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status in codes
    except urllib.error.HTTPError as error:
        return error.code in codes
    except OSError:
        return False


def _patch_target_health() -> None:
    original = elbv2_models.FakeTargetGroup.health_for

    def health_for(self, target, ec2_backend):
        status = original(self, target, ec2_backend)
        base = probe_targets.get(f"{target['Id']}:{target.get('Port', self.port)}")
        if base is None or status.status != "healthy":
            return status
        path = self.health_check_path or "/"
        if _probe(base + path, self.matcher.get("HttpCode", "200"), float(self.health_check_timeout_seconds or 5)):
            return status
        return elbv2_models.FakeHealthStatus(
            status.instance_id, status.port, status.health_check_port, "unhealthy",
            "Target.ResponseCodeMismatch", "Health checks failed",
        )  # fmt: skip

    elbv2_models.FakeTargetGroup.health_for = health_for


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


def publish_dlami(endpoint: str, system: str = "ubuntu-24.04", arch: str = "x86_64") -> str:
    """AWS releases a newer AMI: register one and point the "latest" parameter at it."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID

    ec2 = boto3.client(
        "ec2", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
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
    return image_id


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int | None = None) -> tuple[ThreadedMotoServer, str]:
    """Start the server in this process; returns it and its endpoint URL."""
    _patch_load_balancer_attributes()
    _patch_dlami_parameters()
    _patch_target_health()
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    _register_dlamis(endpoint)
    return server, endpoint


def client_env(endpoint: str) -> dict[str, str]:
    """What the kit's AWS code needs to talk to this server (dummy credentials, one region)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


CLIENT_CIDRS = ["0.0.0.0/0"]
ADMIN_CIDRS = ["203.0.113.0/24"]
UNKNOWN_CERTIFICATE = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0000-1111-2222-333344445555"


class Aws:
    """The test server, a VPC with two subnets and an ACM certificate, and a way to run playbooks."""

    def __init__(self):
        self.server, self.endpoint = start()
        self.env = client_env(self.endpoint)
        options = {"region_name": REGION, "endpoint_url": self.endpoint}
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

    def playbook(
        self, *args: str, playbook: str = "playbooks/aws.yml", secrets: Path | None = None, inventory=None, **extra
    ):
        env = kit.ansible_env() | self.env
        hosts = ["-i", str(inventory)] if inventory else kit.inventory_args()
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), *hosts, playbook]
        cmd += ["-e", f"@{secrets}"] if secrets else []
        cmd += ["-e", json.dumps(self.settings(**extra))]
        proc = subprocess.run([*cmd, *args], cwd=kit.REPO, env=env, capture_output=True, text=True)
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
        found = self.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=self.subnets[0])
        return found["Instances"][0]["InstanceId"]

    def targets(self, name: str) -> dict[str, str]:
        """ "<id>:<port>" -> health state of every target of target group NAME."""
        group = self.elb.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
        found = self.elb.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
        return {f"{t['Target']['Id']}:{t['Target']['Port']}": t["TargetHealth"]["State"] for t in found}

    def groups(self, name: str) -> dict:
        found = self.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [self.vpc]}])["SecurityGroups"]
        return {group["GroupName"]: group for group in found if group["GroupName"].startswith(name)}
