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
import socket
import urllib.error
import urllib.request

from moto.elbv2 import models as elbv2_models
from moto.server import ThreadedMotoServer
from moto.ssm import models as ssm_models

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
