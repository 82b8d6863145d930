"""Which dcgm-exporter release a GPU host runs, and the metrics the kit asks it for.

NVIDIA pairs each exporter release with one DCGM series and says to keep them paired. The exporter
resolves every field of its counters file by name through the go-dcgm it was built with, and an
unknown name makes it exit ("could not find DCGM field": internal/pkg/counters/counter_config.go,
ExtractCounters, at tag 4.5.3-4.8.2), so the file must use the names of the series installed.

Pairing (exporter release notes, docs.nvidia.com/datacenter/dcgm/latest/release-notes/dcgm-exporter.html
and the GitHub releases; tags are <dcgm>-<exporter> up to 4.8.4):
  4.8.0-4.8.2 with DCGM 4.5.1-4.5.3 (tags 4.5.1-4.8.0, 4.5.2-4.8.1, 4.5.3-4.8.2), 4.8.3 with DCGM 4.6.0
  (tag 4.6.0-4.8.3), 4.8.4 with DCGM 4.6.1; 4.9.0 "is tested with DCGM 4.7.0 and 4.7.1 and ships with
  DCGM 4.7.0"; 4.10.0 "ships with DCGM 4.8.0".
"""

from __future__ import annotations

import re

# DCGM series (major.minor) -> the exporter series NVIDIA pairs with it.
EXPORTER_FOR_DCGM = {"4.5": "4.8", "4.6": "4.8", "4.7": "4.9", "4.8": "4.10"}

# The kit's quantities (the keys) and each exporter series' row for it: DCGM field, Prometheus type,
# help. The type is written as given: the exporter does not check it against the field.
#
# 4.8: etc/default-counters.csv at tag 4.5.3-4.8.2 (the same rows at 4.6.0-4.8.3); the XID count
# is the exporter's own field (internal/pkg/counters: DCGMExpXIDErrorsCount; a windowed count per
# XID, 0 per GPU while there is none: internal/pkg/collector/expcollector.go), a gauge since it
# falls when an XID leaves the window. No help has a comma: the exporter reads the file with Go's
# encoding/csv and refuses a row that is not 3 fields (ReadCSVFile, ExtractCounters).
EXPORTER_4_8 = {
    "gpu_util": ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
    "memory_used": ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
    "memory_free": ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
    "gpu_temp": ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
    "memory_temp": ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C)."),
    "power": ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    "sm_clock": ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
    "xid_last": ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered."),
    "xid_count": ("DCGM_EXP_XID_ERRORS_COUNT", "gauge", "XID errors within the last 5 minutes (per XID)."),
    "pcie_replay": ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries."),
    "graphics_active": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active."),
    "tensor_active": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    "dram_active": ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge", "Ratio of cycles the device memory interface is active."),
    "driver_version": ("DCGM_FI_DRIVER_VERSION", "label", "Driver version."),
}

# 4.9 (DCGM 4.7): the release notes rename "the 23 default and profiling-preset fields that DCGM 4.7
# deprecates to their new DCGM 4.7 names"; utilisation becomes a 0-1 ratio and GPU memory bytes; the
# driver-version label becomes DCGM_FI_SYSTEM_DRIVER_VERSION. The new names: DCGM's own list of the
# renames ("renamed per DCGM Field Naming Standard", dcgmlib/dcgm_fields.h and
# testing/python3/dcgm_fields.py, NVIDIA/DCGM at 4.6.0) for the fields whose unit stays; NVIDIA's
# Field Identifiers reference (DCGM 4.7) for the byte fields, the *_BYTES family the 4.9 notes name
# (DCGM_FI_DEV_FB_CAPACITY_BYTES). The SM clock moves to hertz under a name no source here gives,
# and nothing of the kit reads it, so these series leave it out rather than guess.
EXPORTER_4_9 = {
    "gpu_util": ("DCGM_FI_DEV_GPU_UTIL_RATIO", "gauge", "GPU utilization (ratio 0-1)."),
    "memory_used": ("DCGM_FI_DEV_FB_USED_BYTES", "gauge", "Framebuffer memory used (in bytes)."),
    "memory_free": ("DCGM_FI_DEV_FB_FREE_BYTES", "gauge", "Framebuffer memory free (in bytes)."),
    "gpu_temp": ("DCGM_FI_DEV_GPU_TEMP_CELSIUS", "gauge", "GPU temperature (in C)."),
    "memory_temp": ("DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", "gauge", "Memory temperature (in C)."),
    "power": ("DCGM_FI_DEV_BOARD_POWER_WATTS", "gauge", "Power draw (in W)."),
    "xid_last": ("DCGM_FI_DEV_XID_ERROR", "gauge", "Value of the last XID error encountered."),
    "xid_count": EXPORTER_4_8["xid_count"],
    "pcie_replay": ("DCGM_FI_DEV_PCIE_REPLAY_TOTAL", "counter", "Total number of PCIe retries."),
    "graphics_active": ("DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO", "gauge", "Ratio of time the graphics engine is active."),
    "tensor_active": ("DCGM_FI_PROF_TENSOR_UTIL_RATIO", "gauge", "Ratio of cycles the tensor (HMMA) pipe is active."),
    "dram_active": ("DCGM_FI_PROF_DRAM_UTIL_RATIO", "gauge", "Ratio of cycles the device memory interface is active."),
    "driver_version": ("DCGM_FI_SYSTEM_DRIVER_VERSION", "label", "Driver version."),
}

# 4.10 (DCGM 4.8) renames four more, the PCIe and NVLink byte rates (DCGM_FI_PROF_PCIE_TX_BYTES ->
# ..._BYTES_PER_SECOND and the like; 4.10.0 release notes), none of which the kit collects.
COUNTERS = {"4.8": EXPORTER_4_8, "4.9": EXPORTER_4_9, "4.10": EXPORTER_4_9}

# What prometheus_server's recording rules read from every host (the alerts and the dashboard use
# the recorded names): the role fails a host whose exporter does not serve one of them.
ALERT_QUANTITIES = ("gpu_util", "memory_used", "memory_free", "gpu_temp", "power", "xid_count")


def dcgm_series(version):
    """The DCGM series (major.minor) of a Debian package VERSION such as "1:4.7.0-1"; "" when VERSION
    is empty or not such a version (no DCGM installed)."""
    match = re.fullmatch(r"(?:\d+:)?(\d+)\.(\d+)\.\d+(?:-[0-9A-Za-z.+~]+)?", str(version).strip())
    return f"{match[1]}.{match[2]}" if match else ""


def dcgm_exporter_series(dcgm_version):
    """The exporter series paired with the installed DCGM package version, "" for a DCGM the kit does
    not know (or none)."""
    return EXPORTER_FOR_DCGM.get(dcgm_series(dcgm_version), "")


def dcgm_known_series(_=None):
    """The DCGM series the kit knows, with their exporters, for messages ("4.5 (exporter 4.8), ...")."""
    return ", ".join(f"{dcgm} (exporter {exporter})" for dcgm, exporter in EXPORTER_FOR_DCGM.items())


def _upstream(version):
    return re.sub(r"^\d+:", "", version).split("-")[0]


def _key(version):
    return tuple(int(part) for part in _upstream(version).split("."))


def dcgm_exporter_in_series(version, series):
    """Whether the exporter package VERSION (such as "4.8.2-1") belongs to exporter SERIES ("4.8")."""
    return re.fullmatch(re.escape(series) + r"\.\d+", _upstream(str(version))) is not None


def dcgm_exporter_version(madison, series):
    """The newest exporter package version of SERIES that `apt-cache madison` output MADISON lists
    ("" if none): the version apt installs and holds."""
    versions = {line.split("|")[1].strip() for line in madison.splitlines() if line.count("|") >= 2}
    matching = [version for version in versions if dcgm_exporter_in_series(version, series)]
    return max(matching, key=_key) if matching else ""


def dcgm_exporter_counters(series):
    """The rows (field, type, help) of the kit's counters file for exporter SERIES."""
    return [list(row) for row in COUNTERS[series].values()]


def dcgm_exporter_alert_metrics(series):
    """The metric names the alerts and the dashboard need from an exporter of SERIES."""
    return [COUNTERS[series][quantity][0] for quantity in ALERT_QUANTITIES]


class FilterModule:
    def filters(self):
        return {
            "dcgm_exporter_series": dcgm_exporter_series,
            "dcgm_known_series": dcgm_known_series,
            "dcgm_exporter_in_series": dcgm_exporter_in_series,
            "dcgm_exporter_version": dcgm_exporter_version,
            "dcgm_exporter_counters": dcgm_exporter_counters,
            "dcgm_exporter_alert_metrics": dcgm_exporter_alert_metrics,
        }
