"""GPU facts from real nvidia-smi output: the GPUs preflight counts and the memory status shows."""

from __future__ import annotations

from kitcode import load, nvidia_smi

nvidia_smi_gpus = load("roles/inference_host/filter_plugins/nvidia_smi.py").nvidia_smi_gpus
inference_status = load("roles/inference_service/filter_plugins/inference_service.py").inference_status

H200 = {"name": "NVIDIA H200", "memory_mib": 143771, "driver": "580.159.04", "driver_major": 580, "compute_cap": "9.0"}


def test_one_gpu():
    assert nvidia_smi_gpus(nvidia_smi("h200-1gpu", "query-gpu-noheader.csv")) == [{"index": 0, **H200}]


def test_two_gpus_in_their_order():
    gpus = nvidia_smi_gpus(nvidia_smi("h200-2gpu-busy", "query-gpu-noheader.csv"))
    assert gpus == [{"index": 0, **H200}, {"index": 1, **H200}]


def test_no_gpu_is_an_empty_list():
    assert nvidia_smi_gpus("") == []


def status(gpu_memory: str, instances: int, gpus_per_instance: int) -> list:
    """GPU memory per instance as status.yml records it, for running instances."""
    unit = {"status": {"ActiveState": "inactive", "SubState": "dead"}, "__inference_service_unit": "u"}
    units = [unit] * instances + [unit, unit]  # the instances, then the probe and the gateway
    results = [{"status": -1}] * instances
    gpus = [
        list(range(n * gpus_per_instance, (n + 1) * gpus_per_instance)) for n in range(instances)
    ]  # as the manifest has them
    found = inference_status(units, {"files": []}, results, results, "100.0 50.0", gpu_memory, [], gpus)
    return [i["gpu_memory_mib"] for i in found["instances"]]


def test_gpu_memory_per_instance_from_real_output():
    busy = nvidia_smi("h200-2gpu-busy", "memory-used-busy.csv")
    assert status(busy, instances=2, gpus_per_instance=1) == [6251, 6251]
    assert status(busy, instances=1, gpus_per_instance=2) == [12502]  # one tensor-parallel instance
    assert status(nvidia_smi("h200-2gpu-busy", "memory-used-idle.csv"), 2, 1) == [0, 0]
    assert status("", instances=1, gpus_per_instance=1) == [None]  # no GPU: not applicable, not 0
