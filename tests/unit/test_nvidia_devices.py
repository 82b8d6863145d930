"""inference-nvidia-devices: which nodes it makes and checks, from the driver's /proc files (their
real format: driver 590.48.01's /proc/driver/nvidia/gpus/<PCI address>/information)."""

from __future__ import annotations

from pathlib import Path

from kitcode import load

DEVICES = load("roles/inference_engine/files/inference-nvidia-devices")

INFORMATION = """Model: \t\t NVIDIA L40S
IRQ:   \t\t 77
GPU UUID: \t GPU-eaf23aa1-4d3d-596c-da66-b86b0e5db584
Video BIOS: \t 95.02.5d.00.01
Bus Type: \t PCIe
DMA Size: \t 47 bits
DMA Mask: \t 0x7fffffffffff
Bus Location: \t {bus}
Device Minor: \t {minor}
GPU Firmware: \t 590.48.01
GPU Excluded:\t No
"""
# Minors need not follow the PCI order (a g6e.48xlarge-like host with eight GPUs).
EIGHT = {
    "0000:07:00.0": 2,
    "0000:0b:00.0": 3,
    "0000:48:00.0": 0,
    "0000:4c:00.0": 1,
    "0000:88:00.0": 6,
    "0000:8b:00.0": 7,
    "0000:c8:00.0": 4,
    "0000:cb:00.0": 5,
}


def proc(tmp_path: Path, gpus: dict[str, int]) -> Path:
    for bus, minor in gpus.items():
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(INFORMATION.format(bus=bus, minor=minor))
    return tmp_path


def test_minors_come_from_the_drivers_files_not_the_pci_order(tmp_path):
    assert DEVICES.gpu_minors(proc(tmp_path, EIGHT)) == list(range(8))


def test_one_gpu_whose_minor_is_not_0(tmp_path):
    assert DEVICES.gpu_minors(proc(tmp_path, {"0000:30:00.0": 3})) == [3]


def test_no_gpu_no_minor(tmp_path):
    assert DEVICES.gpu_minors(tmp_path) == []


def test_every_node_the_engines_open():
    assert DEVICES.nodes([0, 3]) == ["nvidiactl", "nvidia0", "nvidia3", "nvidia-uvm", "nvidia-uvm-tools"]


def test_a_missing_or_non_device_node_is_reported(tmp_path):
    (tmp_path / "nvidiactl").symlink_to("/dev/null")  # a character device
    (tmp_path / "nvidia0").write_text("")  # a plain file
    assert DEVICES.missing(["nvidiactl", "nvidia0", "nvidia-uvm"], tmp_path) == ["nvidia0", "nvidia-uvm"]
