#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: inference_drain_wait
short_description: Wait until a host taken out of its load balancer gets no new request and has none in flight
description:
  - Once the host is out of its load balancer (targets deregistered, /ready answering 503), waits
    until its gateway has served no inference request for O(quiet_seconds), and then until
    O(readings) readings in a row, O(interval) seconds apart, find nothing in flight on any
    engine instance and still no new request. Fails after O(timeout) seconds.
  - The last request seen comes from the gateway's access log, which nginx writes when a request
    ends; requests still running are the engines' in-flight gauges. So no new line and nothing
    in flight for the quiet period means that nothing arrived in it. Health checks (/ready,
    /health) do not count; every route under /v1/ does, answered or refused.
  - An ALB keeps sending new requests to a deregistered target for a while (about 17 s observed,
    longer reported; aws-load-balancer-controller#2366, #3270), and a load balancer checking /ready
    until its health checks fail: a fixed wait shorter than that stops engines that still get
    requests, a longer one wastes every rollout's time.
options:
  metrics_urls:
    description: Each engine instance's /metrics URL.
    type: list
    elements: str
    required: true
  in_flight_metrics:
    description: The gauges whose sum is the requests in flight (waiting and running).
    type: list
    elements: str
    required: true
  access_log:
    description: The gateway's access log (the kit's inference_gateway format, with port=<port>).
    type: path
    required: true
  ports:
    description: The gateway ports whose requests count.
    type: list
    elements: int
    required: true
  quiet_seconds:
    description: Seconds without a new request before the in-flight readings count.
    type: int
    required: true
  readings:
    description: Readings in a row that must find nothing in flight.
    type: int
    default: 3
  interval:
    description: Seconds between readings.
    type: float
    default: 2
  timeout:
    description: Seconds to wait in all before failing.
    type: int
    required: true
"""

RETURN = r"""
waited:
  description: Seconds waited.
  type: float
  returned: always
requests_seen:
  description: Inference requests the gateway logged while waiting.
  type: int
  returned: always
"""

import os
import re
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def in_flight(url, names):
    """Requests in flight on one engine: 0 when it refuses the connection (not running), None when
    it cannot tell (no answer, or no such gauges): not idle as far as anyone knows."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.URLError as error:
        return 0 if isinstance(error.reason, ConnectionRefusedError) else None
    except OSError:
        return None
    values = [float(v) for n, v in SAMPLE.findall(text) if n in names]
    return int(sum(values)) if values else None


class LogTail:
    """The lines appended to PATH since the last read (from its end when first opened)."""

    def __init__(self, path):
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = ""

    def lines(self):
        if not os.path.exists(self.path):
            return []
        if os.path.getsize(self.path) < self.offset:  # rotated: a new file
            self.offset, self.partial = 0, ""
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
            self.offset = handle.tell()
        text, self.partial = self.partial + text, ""
        if text and not text.endswith("\n"):
            text, _, self.partial = text.rpartition("\n")
        return text.splitlines()


def main():
    module = AnsibleModule(
        argument_spec={
            "metrics_urls": {"type": "list", "elements": "str", "required": True},
            "in_flight_metrics": {"type": "list", "elements": "str", "required": True},
            "access_log": {"type": "path", "required": True},
            "ports": {"type": "list", "elements": "int", "required": True},
            "quiet_seconds": {"type": "int", "required": True},
            "readings": {"type": "int", "default": 3},
            "interval": {"type": "float", "default": 2},
            "timeout": {"type": "int", "required": True},
        },
        supports_check_mode=False,
    )
    p = module.params
    ports = "|".join(str(port) for port in p["ports"])
    request = re.compile(rf'"[A-Z]+ /v1/\S* [^"]*" .* port=(?:{ports})\b')
    log = LogTail(p["access_log"])
    start = last_seen = time.monotonic()
    seen, zeros, flights = 0, 0, []
    while True:
        new = sum(1 for line in log.lines() if request.search(line))
        now = time.monotonic()
        if new:
            seen, last_seen = seen + new, now
        flights = [in_flight(url, p["in_flight_metrics"]) for url in p["metrics_urls"]]
        quiet = now - last_seen >= p["quiet_seconds"]
        zeros = zeros + 1 if quiet and all(f == 0 for f in flights) else 0
        if zeros >= p["readings"]:
            module.exit_json(changed=False, waited=round(now - start, 1), requests_seen=seen)
        if now - start >= p["timeout"]:
            pairs = zip(p["metrics_urls"], flights, strict=True)
            busy = ", ".join(f"{url}: {'unknown' if f is None else f}" for url, f in pairs if f != 0)
            module.fail_json(
                msg=f"After {p['timeout']} s the host still gets or serves requests: the last new request "
                f"{now - last_seen:.0f} s ago (quiet needs {p['quiet_seconds']} s), in flight: {busy or 'none'}. "
                "Is the load balancer still sending it requests? The host stays drained and running. "
                "Run again to retry, or raise inference_service_drain_timeout.",
                waited=round(now - start, 1),
                requests_seen=seen,
            )
        time.sleep(p["interval"])


if __name__ == "__main__":
    main()
