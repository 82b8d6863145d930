"""The readiness probe's schedule (roles/inference_engine/files/inference-probe, watch): a ready
instance every INTERVAL seconds, one without its flag every RETRY seconds."""

from __future__ import annotations

import pytest
from kitcode import load

probe = load("roles/inference_engine/files/inference-probe")


@pytest.mark.parametrize(
    ("flag_exists", "last_probe", "now", "interval", "due"),
    [
        (False, None, 100.0, 60, True),  # never probed
        (True, None, 100.0, 60, True),  # a flag left by an earlier watcher
        (True, 100.0, 159.9, 60, False),  # ready: the interval
        (True, 100.0, 160.0, 60, True),
        (False, 100.0, 101.9, 60, False),  # not ready (its unit removed the flag): every RETRY seconds
        (False, 100.0, 102.0, 60, True),
        (False, 100.0, 101.0, 1, True),  # an interval below RETRY wins
        (True, 100.0, 101.0, 1, True),
    ],
)
def test_probe_due(flag_exists, last_probe, now, interval, due):
    assert probe.RETRY == 2.0
    assert probe.probe_due(flag_exists, last_probe, now, interval) is due


def test_the_probe_results_in_prometheus_text_format():
    results = {
        "1": {"inference_probe_success": 0, "inference_probe_duration_seconds": 30.001},  # never ready yet
        "0": {
            "inference_probe_success": 1,
            "inference_probe_duration_seconds": 0.042,
            "inference_probe_timestamp_seconds": 1764471600,
            "inference_probe_last_success_timestamp_seconds": 1764471600,
        },
    }
    samples = [line for line in probe.exposition(results, draining=False).splitlines() if not line.startswith("#")]
    assert samples == [
        'inference_probe_success{engine_instance="0"} 1',
        'inference_probe_success{engine_instance="1"} 0',
        'inference_probe_duration_seconds{engine_instance="0"} 0.042',
        'inference_probe_duration_seconds{engine_instance="1"} 30.001',
        'inference_probe_timestamp_seconds{engine_instance="0"} 1764471600',
        'inference_probe_last_success_timestamp_seconds{engine_instance="0"} 1764471600',
        "inference_host_draining 0",
    ]
    assert probe.exposition({}, draining=True).splitlines()[-1] == "inference_host_draining 1"


def test_every_metric_has_help_and_type():
    text = probe.exposition({}, draining=False)
    for name, _ in probe.METRICS:
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} gauge" in text


def test_metrics_are_replaced_at_once(tmp_path):
    probe.write_metrics(str(tmp_path), "a 1\n")
    probe.write_metrics(str(tmp_path), "a 2\n")
    assert [path.name for path in tmp_path.iterdir()] == ["inference-probe.prom"]
    assert (tmp_path / "inference-probe.prom").read_text() == "a 2\n"
