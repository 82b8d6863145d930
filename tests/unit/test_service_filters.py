"""Day-2 logic of inference_service: requests in flight, the status, the capacity guard."""

from __future__ import annotations

import pytest
from kitcode import load

filters = load("roles/inference_service/filter_plugins/inference_service.py")
GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting"]
METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_running_total 7.0
"""


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": 200, "content": METRICS}, 3),
        ({"status": 200, "content": "other_metric 1\n"}, None),  # answers, but without the gauges
        ({"status": -1, "msg": "Request failed: <urlopen error [Errno 111] Connection refused>"}, 0),  # not running
        ({"status": -1, "msg": "Request failed: <urlopen error timed out>"}, -1),  # busy: ask again
        ({"status": 503, "content": ""}, -1),
    ],
)
def test_requests_in_flight(result, expected):
    assert filters.inference_in_flight(result, GAUGES) == expected


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0m00s"), (65, "1m05s"), (3725, "1h02m05s"), (90061, "1d01h01m01s")]
)
def test_uptime(seconds, shown):
    assert filters._uptime(seconds) == shown


def survey(peer: str, files: list[str], **result) -> dict:
    return {"__inference_service_peer": peer, "files": [{"path": f"/x/{name}"} for name in files], **result}


SERVING_TWO = ["vllm-0.env", "vllm-1.env", "0", "1"]  # two instances, both ready


@pytest.mark.parametrize(
    ("hosts", "batch", "out_percent", "not_serving", "unreachable"),
    [
        ([survey("a", SERVING_TWO), survey("b", SERVING_TWO)], ["a"], 50.0, [], []),
        ([survey("a", SERVING_TWO), survey("b", ["vllm-0.env", "vllm-1.env", "0"])], ["a"], 75.0, ["b"], []),
        ([survey("a", SERVING_TWO), survey("b", [*SERVING_TWO, "draining"])], ["a"], 100.0, ["b"], []),
        ([survey("a", SERVING_TWO), survey("b", [], unreachable=True)], ["a"], 100.0, [], ["b"]),  # unknown: refused
        ([survey("a", ["0"])], ["a"], 100.0, [], []),  # no instance settings yet: one instance
        ([survey("a", SERVING_TWO), survey("b", SERVING_TWO)], [], 0.0, [], []),
    ],
)
def test_capacity_after_a_batch(hosts, batch, out_percent, not_serving, unreachable):
    capacity = filters.inference_capacity(hosts, batch)
    assert (capacity["out_after_percent"], capacity["not_serving"], capacity["unreachable"]) == (
        out_percent,
        not_serving,
        unreachable,
    )


def test_status_of_a_running_ready_instance_reads_as_one_line():
    unit = {
        "__inference_service_unit": "inference-vllm@0.service",
        "status": {
            "ActiveState": "active",
            "SubState": "running",
            "ActiveEnterTimestamp": "Sun 2026-11-29 02:00:00 UTC",
            "ActiveEnterTimestampMonotonic": "10000000",
            "NRestarts": "1",
        },
    }
    other = {"status": {"ActiveState": "active", "SubState": "running"}}
    model = {"status": 200, "json": {"data": [{"id": "tiny", "root": "/var/lib/inference/models/tiny"}]}}
    status = filters.inference_status(
        [unit, other, other], {"files": [{"path": "/run/inference-ready/0"}]}, [{"status": 200, "content": METRICS}],
        [model], "3735.0 1.0", "", GAUGES, [[]],
    )  # fmt: skip
    assert filters.inference_status_lines(status | {"engine": "vllm 0.33.0"}) == [
        "engine vllm 0.33.0, gateway active (running), readiness probe active (running)",
        "instance 0: inference-vllm@0.service active (running) since Sun 2026-11-29 02:00:00 UTC (up 1h02m05s), "
        "restarts 1, ready yes, model tiny (/var/lib/inference/models/tiny), in flight 3, GPU memory n/a (no GPU)",
    ]


@pytest.mark.parametrize(
    ("manifest", "differences", "said"),
    [
        (True, [], ", runs the current settings"),
        (
            True,
            ["engine", "gateway"],
            ", runs other settings than configured (engine, gateway: run playbooks/rolling.yml)",
        ),
        (False, ["engine", "model", "gateway"], ", no manifest (never converged by this kit: run site.yml)"),
    ],
)
def test_status_says_whether_the_host_runs_the_current_settings(manifest, differences, said):
    status = {
        "engine": "vllm 0.33.0",
        "gateway": "active (running)",
        "readiness_probe": "active (running)",
        "draining": False,
        "instances": [],
        "manifest": manifest,
        "differences": differences,
    }
    assert filters.inference_status_lines(status) == [
        "engine vllm 0.33.0, gateway active (running), readiness probe active (running)" + said
    ]


def test_the_draining_flag_is_the_one_the_contract_names():
    hosts = [survey("a", [*SERVING_TWO, "out-of-service"]), survey("b", SERVING_TWO)]
    assert filters.inference_capacity(hosts, ["b"], "out-of-service")["out_after_percent"] == 100.0  # a is drained
    assert filters.inference_capacity(hosts, ["b"])["out_after_percent"] == 50.0  # another file is no flag
