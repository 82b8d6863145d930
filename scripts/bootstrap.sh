#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian 12 machine (idempotent):
# podman, runc, netavark, aardvark-dns and iptables (podman's network backend) and mmdebstrap for the systemd test hosts, rsync (model copies), shellcheck for the lint,
# haproxy (the load balancer of the day-2 tests), and a
# virtualenv .venv with the pinned control-node and test requirements (installed with uv).
set -euo pipefail
case "${1:-}" in
    "") ;;
    -h | --help) sed -n '2,5s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: scripts/bootstrap.sh   (it takes no arguments; unknown: $1)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."

packages=(podman runc netavark aardvark-dns iptables mmdebstrap shellcheck openssh-client rsync haproxy)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "bootstrap: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# uv installs the requirements in seconds where pip takes minutes; the tests also use it for their
# vLLM virtualenvs. Byte-compiled up front, as pip would: every ansible-playbook run, Ansible worker
# and AWS module call imports ansible, boto3 and botocore, and where Python may not write bytecode
# (PYTHONDONTWRITEBYTECODE, read-only trees) it would compile them from source each time, about
# 1 s of CPU per process.
uv=uv==0.13.9
if [[ ! -x .venv/bin/ansible-playbook || ! -x .venv/bin/uv || requirements-dev.txt -nt .venv/.installed-compiled ]]; then
    echo "bootstrap: creating .venv" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check "$uv"
    .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -r requirements-dev.txt
    touch .venv/.installed-compiled
fi
