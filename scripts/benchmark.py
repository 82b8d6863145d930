#!/usr/bin/env python3
"""Benchmark the kit on a fresh local test host and print the figures.

  first converge      site.yml on a fresh host (installs vLLM CPU, copies the model, starts it)
  second converge     site.yml again (must report changed=0)
  engine start        first start of the instance to ready (from its unit's timestamps)
  restart             `systemctl restart` to ready again, with warm caches
  gateway overhead    median and p99 latency of a small generation through the gateway vs
                      straight to the engine, measured from inside the host in the same run

Run with the demo's environment (scripts/demo.sh sets it up); it removes the demo host.
Targets on a 2-core machine: idempotent re-converge < 30 s, gateway overhead < 5 % of the median.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import kit  # noqa: E402

REQUESTS = 200
MANIFEST = "/etc/ansible/facts.d/inference.fact"  # what the host runs (roles/inference_manifest)

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


def timed_converge(secrets: Path) -> tuple[float, kit.Run]:
    start = time.monotonic()
    run = kit.playbook("site.yml", secrets_file=secrets, quiet=True)
    if run.rc:
        sys.exit(f"converge failed:\n{run.output[-3000:]}")
    return time.monotonic() - start, run


def first_unit() -> str:
    """The first engine instance's unit, from the host manifest."""
    return json.loads(kit.host_sh(f"cat {MANIFEST}").stdout)["engine"]["instances"][0]["unit"]


def unit_seconds(unit: str, prop_from: str, prop_to: str) -> float:
    values = kit.host_sh(f"systemctl show -p {prop_from} -p {prop_to} --value {unit}").stdout.split()
    return (int(values[1]) - int(values[0])) / 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    kit.models()
    secrets = kit.demo_secrets()
    kit.start_host()
    first, _ = timed_converge(secrets)
    unit = first_unit()
    cold_start = unit_seconds(unit, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    second, run = timed_converge(secrets)
    start = time.monotonic()
    kit.host_sh(f"systemctl restart {unit}")
    restart = time.monotonic() - start
    settings = json.loads(secrets.read_text())
    keys = {
        "client_key": settings["vault_inference_gateway_api_keys"][0]["key"],
        "engine_key": settings["vault_inference_engine_internal_key"],
        "n": REQUESTS,
        "MANIFEST": MANIFEST,
    }
    script = "".join(f"{name} = {value!r}\n" for name, value in keys.items()) + LATENCY_PROBE
    probe = kit.testhosts.host_exec(kit.HOST, ["python3", "-"], input=script)
    latencies = json.loads(probe.stdout)
    gateway, direct = latencies["gateway"], latencies["direct"]
    gateway_median, direct_median = statistics.median(gateway), statistics.median(direct)
    overhead = gateway_median - direct_median
    print(f"first converge (fresh host)         {first:7.1f} s")
    print(f"second converge (changed={run.recap()['changed']})         {second:7.1f} s   target < 30 s")
    print(f"engine first start to ready          {cold_start:7.1f} s")
    print(f"engine restart to ready (warm)       {restart:7.1f} s")
    print(f"small generation, {REQUESTS} requests each, median / p99:")
    print(f"  direct to the engine               {direct_median:7.2f} / {percentile(direct, 0.99):.2f} ms")
    print(f"  through the gateway                {gateway_median:7.2f} / {percentile(gateway, 0.99):.2f} ms")
    print(
        f"  gateway overhead (median)          {overhead:7.2f} ms = {100 * overhead / direct_median:.1f} %"
        "   target < 5 %"
    )
    exposure = kit.host_sh(f"systemd-analyze security --no-pager {unit} | tail -n 1").stdout.strip()
    print(f"engine unit sandboxing (systemd-analyze security): {exposure}")
    kit.testhosts.remove_host(kit.HOST)
    return 0


if __name__ == "__main__":
    sys.exit(main())
