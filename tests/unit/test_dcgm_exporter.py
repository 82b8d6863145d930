"""The DCGM exporter a GPU host gets: its series from the host's DCGM, its version from the package
sources, the names of its counters file, and that Prometheus's rules read every series' names."""

from __future__ import annotations

import re

import pytest
import yaml
from kitcode import REPO, load

dcgm = load("roles/inference_metrics/filter_plugins/dcgm_exporter.py")
RULES = REPO / "roles/prometheus_server/templates/etc/prometheus/rules/inference.yml.j2"

# `apt-cache madison datacenter-gpu-manager-exporter` as NVIDIA's CUDA repository lists it
# (package files are named like datacenter-gpu-manager-exporter_4.8.2-1_amd64.deb).
REPO_URL = "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64  Packages"
MADISON = "\n".join(
    f"datacenter-gpu-manager-exporter | {version} | {REPO_URL}"
    for version in ["4.10.0-1", "4.9.0-1", "4.8.4-1", "4.8.10-1", "4.8.2-1", "4.7.1-1"]
)


@pytest.mark.parametrize(
    ("installed", "series"),
    [
        ("1:4.5.3-1", "4.8"),  # DLAMI builds of mid-2026
        ("1:4.6.1-1", "4.8"),
        ("4.6.0-1", "4.8"),
        ("1:4.7.0-1", "4.9"),  # DLAMI builds since September 2026
        ("4.7.1-1", "4.9"),
        ("1:4.8.0-1", "4.10"),
        ("1:4.4.2-1", ""),  # older than the kit knows
        ("1:4.9.0-1", ""),  # newer than the kit knows
        ("1:3.3.9-1", ""),
        ("", ""),  # no DCGM installed
        ("garbage", ""),
    ],
)
def test_the_exporter_series_follows_the_installed_dcgm(installed, series):
    assert dcgm.dcgm_exporter_series(installed) == series


@pytest.mark.parametrize(
    ("series", "version"),
    [("4.8", "4.8.10-1"), ("4.9", "4.9.0-1"), ("4.10", "4.10.0-1"), ("4.11", "")],
)
def test_the_newest_version_of_the_series_is_chosen(series, version):
    assert dcgm.dcgm_exporter_version(MADISON, series) == version


def test_no_version_when_the_sources_offer_none():
    assert dcgm.dcgm_exporter_version("", "4.8") == ""


@pytest.mark.parametrize(
    ("version", "series", "inside"),
    [("4.8.2-1", "4.8", True), ("1:4.8.2-1", "4.8", True), ("4.9.0-1", "4.8", False), ("4.10.0-1", "4.1", False)],
)
def test_a_pinned_version_must_be_of_the_series(version, series, inside):
    assert dcgm.dcgm_exporter_in_series(version, series) is inside


def test_the_known_series_are_named_for_the_refusal():
    assert dcgm.dcgm_known_series() == "4.5 (exporter 4.8), 4.6 (exporter 4.8), 4.7 (exporter 4.9), 4.8 (exporter 4.10)"


# The names each series' counters file holds for what the alerts read (4.8: the exporter's
# etc/default-counters.csv at tag 4.5.3-4.8.2; 4.9 and 4.10: DCGM 4.7's names, see the filter).
@pytest.mark.parametrize(
    ("series", "names"),
    [
        (
            "4.8",
            [
                "DCGM_FI_DEV_GPU_UTIL",
                "DCGM_FI_DEV_FB_USED",
                "DCGM_FI_DEV_FB_FREE",
                "DCGM_FI_DEV_GPU_TEMP",
                "DCGM_FI_DEV_POWER_USAGE",
                "DCGM_EXP_XID_ERRORS_COUNT",
            ],
        ),
        *(
            (
                series,
                [
                    "DCGM_FI_DEV_GPU_UTIL_RATIO",
                    "DCGM_FI_DEV_FB_USED_BYTES",
                    "DCGM_FI_DEV_FB_FREE_BYTES",
                    "DCGM_FI_DEV_GPU_TEMP_CELSIUS",
                    "DCGM_FI_DEV_BOARD_POWER_WATTS",
                    "DCGM_EXP_XID_ERRORS_COUNT",
                ],
            )
            for series in ("4.9", "4.10")
        ),
    ],
)
def test_the_alerts_names_per_series(series, names):
    assert dcgm.dcgm_exporter_alert_metrics(series) == names


@pytest.mark.parametrize("series", ["4.8", "4.9", "4.10"])
def test_each_counters_file_collects_what_the_alerts_read_and_is_valid(series):
    rows = dcgm.dcgm_exporter_counters(series)
    fields = [row[0] for row in rows]
    assert set(dcgm.dcgm_exporter_alert_metrics(series)) <= set(fields)
    assert len(fields) == len(set(fields))
    assert {row[1] for row in rows} <= {"gauge", "counter", "label"}  # the types the exporter parses
    assert all(re.fullmatch(r"DCGM_(FI|EXP)_[A-Z0-9_]+", field) for field in fields)
    assert all("," not in row[2] for row in rows)  # a comma would add a CSV column


def test_the_driver_version_label_is_renamed_in_4_9():
    labels = {
        series: [row[0] for row in dcgm.dcgm_exporter_counters(series) if row[1] == "label"] for series in dcgm.COUNTERS
    }
    assert labels == {
        "4.8": ["DCGM_FI_DRIVER_VERSION"],
        "4.9": ["DCGM_FI_SYSTEM_DRIVER_VERSION"],
        "4.10": ["DCGM_FI_SYSTEM_DRIVER_VERSION"],
    }


def recording_rules():
    text = RULES.read_text()
    rules = yaml.safe_load(text.split("\n", 2)[2])  # past the Jinja header and ansible_managed
    return {rule["record"]: rule["expr"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}


@pytest.mark.parametrize("series", ["4.8", "4.9", "4.10"])
def test_prometheus_records_every_series_names_under_one_name(series):
    """A fleet may mix series: each recorded quantity reads the series' own name, in the right unit."""
    rules = recording_rules()
    names = dict(zip(dcgm.ALERT_QUANTITIES, dcgm.dcgm_exporter_alert_metrics(series), strict=True))
    recorded = {
        "gpu_util": "inference:gpu_utilization_ratio",
        "memory_used": "inference:gpu_memory_used_bytes",
        "memory_free": "inference:gpu_memory_free_bytes",
        "gpu_temp": "inference:gpu_temperature_celsius",
        "power": "inference:gpu_power_watts",
    }
    for quantity, record in recorded.items():
        assert re.search(rf"\b{names[quantity]}\b", rules[record]), (record, names[quantity])
    scale = {"4.8": (r"DCGM_FI_DEV_FB_USED \* 1048576", r"DCGM_FI_DEV_GPU_UTIL / 100")}.get(series, ())
    for pattern in scale:
        assert re.search(pattern, " ".join(rules.values())), pattern
