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
