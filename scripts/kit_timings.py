#!/usr/bin/env python3
"""Time the kit's own work on local test hosts and print the figures, each run split by phase
(the playbook's plays, from ansible.posix.profile_tasks). Not the engines' serving capacity: that
is playbooks/capacity.yml.

  first converge       site.yml on a fresh host: installs vLLM (CPU build), copies the model, starts it
  re-run, nothing new  site.yml again (changed=0): every serving role skips its install and configure
  --check --diff       on the converged host
  full re-run          site.yml -e inference_full_converge=true: every role applies, still changed=0
  engine start         first start of the instance to ready, and a restart with warm caches
  gateway overhead     median and p99 latency of a small generation through the gateway vs
                       straight to the engine, from inside the host in the same run
  four hosts           the re-run on four converged hosts at once (--hosts 4, the default)

Runs with the demo's environment (scripts/demo.sh sets it up: the tiny models, the test host
image) on test hosts 1 to --hosts, which it removes at the end; not beside the test suite, whose
lanes use test hosts 1 and 5-9. Takes about 15 minutes on a 2-core machine.
Targets: re-run <= 15 s on one host and <= 20 s on four, --check --diff <= 20 s, gateway overhead
< 5 % of the median."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kit  # noqa: E402

REQUESTS = 200
MANIFEST = "/etc/ansible/facts.d/inference.fact"  # what the host runs (roles/inference_manifest)
# The phases of site.yml by their plays' names.
PHASES = [
    ("AWS (skipped without it)", ("AWS |", "Inventory |", "Register |", "Monitoring |")),
    ("preflight", ("Preflight |",)),
    ("serve", ("Serve |",)),
    ("rolling", ("Rolling |",)),
    ("verify", ("Verify |",)),
]

# Runs inside the host as root: alternate gateway and direct requests so both see the same load.
# The keys arrive with the script on standard input, never as arguments.
LATENCY_PROBE = """
import json, sys, time, urllib.request
manifest = json.load(open(MANIFEST))
gateway_port, engine_port = manifest["gateway"]["ports"][0], manifest["engine"]["instances"][0]["port"]
body = json.dumps({"model": manifest["engine"]["served_name"], "prompt": "Hello", "max_tokens": 4,
                   "temperature": 0}).encode()
def once(port, key):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return (time.perf_counter() - start) * 1000
for _ in range(10):
    once(gateway_port, client_key); once(engine_port, engine_key)
result = {"gateway": [], "direct": []}
for _ in range(n):
    result["gateway"].append(once(gateway_port, client_key))
    result["direct"].append(once(engine_port, engine_key))
print(json.dumps(result))
"""


def seconds(clock: str) -> float:
    hours, minutes, rest = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def phases(output: str, wall: float) -> dict[str, float]:
    """Seconds per phase: profile_tasks prints, as each task starts, the time since the one before,
    which belongs to the play that task ran in. What precedes the first task and follows the last
    (Ansible's start-up: inventory, playbook parsing) is "start-up"."""
    split = {name: 0.0 for name, _ in PHASES}
    play, previous_play, elapsed = "", "", 0.0
    for line in output.splitlines():
        if started := re.match(r"PLAY \[(.*)\]", line):
            play = started.group(1)
            continue
        if clock := re.search(r"\(\d+:\d+:[\d.]+\)\s+(\d+:\d+:[\d.]+) \*", line):
            now = seconds(clock.group(1))
            name = next((n for n, prefixes in PHASES if previous_play.startswith(prefixes)), None)
            if name:
                split[name] += now - elapsed
            elapsed, previous_play = now, play
    split["start-up and the last task"] = wall - sum(split.values())
    return split


def timed(label: str, *args: str, secrets: Path, inventory: Path | None = None, hosts: list[str]) -> float:
    start = time.monotonic()
    run = kit.playbook("site.yml", *args, secrets_file=secrets, inventory=inventory, quiet=True)
    wall = time.monotonic() - start
    if run.rc:
        sys.exit(f"{label} failed:\n{run.output[-3000:]}")
    changed = sum(run.recap(host)["changed"] for host in hosts)
    split = ", ".join(f"{name} {value:.1f}" for name, value in phases(run.output, wall).items() if value >= 0.05)
    print(f"{label:34} {wall:7.1f} s   changed={changed}   ({split})", flush=True)
    return wall


def first_unit(host: str) -> str:
    """The first engine instance's unit, from the host manifest."""
    return json.loads(kit.host_sh(f"cat {MANIFEST}", host).stdout)["engine"]["instances"][0]["unit"]


def unit_seconds(host: str, unit: str, prop_from: str, prop_to: str) -> float:
    values = kit.host_sh(f"systemctl show -p {prop_from} -p {prop_to} --value {unit}", host).stdout.split()
    return (int(values[1]) - int(values[0])) / 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def gateway_overhead(host: str, secrets: Path) -> None:
    settings = json.loads(secrets.read_text())
    keys = {
        "client_key": settings["vault_inference_gateway_api_keys"][0]["key"],
        "engine_key": settings["vault_inference_engine_internal_key"],
        "n": REQUESTS,
        "MANIFEST": MANIFEST,
    }
    script = "".join(f"{name} = {value!r}\n" for name, value in keys.items()) + LATENCY_PROBE
    latencies = json.loads(kit.testhosts.host_exec(host, ["python3", "-"], input=script).stdout)
    gateway, direct = latencies["gateway"], latencies["direct"]
    gateway_median, direct_median = statistics.median(gateway), statistics.median(direct)
    overhead = gateway_median - direct_median
    print(f"small generation, {REQUESTS} requests each, median / p99:")
    print(f"  direct to the engine               {direct_median:7.2f} / {percentile(direct, 0.99):.2f} ms")
    print(f"  through the gateway                {gateway_median:7.2f} / {percentile(gateway, 0.99):.2f} ms")
    print(f"  gateway overhead (median)          {overhead:7.2f} ms = {100 * overhead / direct_median:.1f} %")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4, choices=range(1, 5), help="hosts of the fleet re-run (1-4)")
    parser.add_argument("--keep", action="store_true", help="leave the test hosts running")
    options = parser.parse_args()
    os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
    kit.models()
    secrets = kit.demo_secrets()
    numbers = list(range(1, options.hosts + 1))
    try:
        one = kit.host_name(1)
        kit.start_host(1)
        alone = kit.inventory([1], secrets=secrets)
        print(f"machine: {os.cpu_count()} CPUs; one host ({one}) unless said", flush=True)
        timed("first converge (fresh host)", secrets=secrets, inventory=alone, hosts=[one])
        unit = first_unit(one)
        start = unit_seconds(one, unit, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
        print(f"{'engine first start to ready':34} {start:7.1f} s", flush=True)
        timed("re-run, nothing new", secrets=secrets, inventory=alone, hosts=[one])
        timed("re-run, nothing new (again)", secrets=secrets, inventory=alone, hosts=[one])
        timed("--check --diff", "--check", "--diff", secrets=secrets, inventory=alone, hosts=[one])
        full = ("-e", "inference_full_converge=true")
        timed("full re-run (inference_full_converge)", *full, secrets=secrets, inventory=alone, hosts=[one])
        restart = time.monotonic()
        kit.host_sh(f"systemctl restart {unit}", one)
        print(f"{'engine restart to ready (warm)':34} {time.monotonic() - restart:7.1f} s", flush=True)
        gateway_overhead(one, secrets)
        exposure = kit.host_sh(f"systemd-analyze security --no-pager {unit} | tail -n 1", one).stdout.strip()
        print(f"engine unit sandboxing (systemd-analyze security): {exposure}")
        if options.hosts > 1:
            for n in numbers[1:]:  # from the image with the engine installed, as a baked fleet would be
                kit.start_host(n, engine_installed=True)
            fleet = kit.inventory(numbers, secrets=secrets)
            names = [kit.host_name(n) for n in numbers]
            timed(
                f"converge of {options.hosts} hosts ({options.hosts - 1} new)",
                secrets=secrets,
                inventory=fleet,
                hosts=names,
            )
            timed(f"re-run on {options.hosts} hosts, nothing new", secrets=secrets, inventory=fleet, hosts=names)
    finally:
        if not options.keep:
            for n in numbers:
                kit.testhosts.remove_host(kit.host_name(n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
