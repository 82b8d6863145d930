"""The contract's naming rules: an engine's units and its instances' settings files."""

from __future__ import annotations

import pytest
from kitcode import load

layout = load("roles/inference/filter_plugins/inference_layout.py")


@pytest.mark.parametrize(
    ("engine", "instance", "unit"),
    [
        ("vllm", None, "inference-vllm@.service"),
        ("vllm", 0, "inference-vllm@0.service"),
        ("sglang", "7", "inference-sglang@7.service"),
        ("my_engine", 12, "inference-my_engine@12.service"),
    ],
)
def test_engine_units(engine, instance, unit):
    assert layout.inference_engine_unit(engine, instance) == unit


@pytest.mark.parametrize(
    ("name", "unit"),
    [
        ("vllm-0.env", "inference-vllm@0.service"),
        ("/etc/inference/sglang-3.env", "inference-sglang@3.service"),
        ("vllm-secret.env", None),  # the key, not an instance
        ("vllm-0.env.bak", None),
        ("sglang-logging.json", None),
        ("Vllm-0.env", None),  # engine names are lower case
    ],
)
def test_the_unit_a_settings_file_belongs_to(name, unit):
    assert layout.inference_unit_of_settings(name) == unit


def test_settings_and_units_name_each_other():
    for engine, instance in [("vllm", 0), ("sglang", 5)]:
        name = layout.inference_instance_settings(engine, instance)
        assert layout.inference_unit_of_settings(name) == layout.inference_engine_unit(engine, instance)


def test_an_engines_units_keep_the_instances_order():
    assert layout.inference_engine_units("vllm", [2, 0]) == ["inference-vllm@2.service", "inference-vllm@0.service"]


@pytest.mark.parametrize(
    ("ids", "gpus", "per_instance", "expected"),
    [
        # a CPU test host: no GPUs to hand out
        ([0], [], 1, [{"id": 0, "unit": "inference-vllm@0.service", "port": 8100, "gpus": []}]),
        # g6e.12xlarge, one instance per GPU
        (
            [0, 1, 2, 3],
            [0, 1, 2, 3],
            1,
            [{"id": n, "unit": f"inference-vllm@{n}.service", "port": 8100 + n, "gpus": [n]} for n in range(4)],
        ),
        # g6e.48xlarge, tensor parallel over four GPUs each
        (
            [0, 1],
            list(range(8)),
            4,
            [
                {"id": 0, "unit": "inference-vllm@0.service", "port": 8100, "gpus": [0, 1, 2, 3]},
                {"id": 1, "unit": "inference-vllm@1.service", "port": 8101, "gpus": [4, 5, 6, 7]},
            ],
        ),
        # GPU indices as nvidia-smi reports them (strings), not necessarily from 0
        (
            [0, 1],
            ["2", "3"],
            "1",
            [
                {"id": 0, "unit": "inference-vllm@0.service", "port": 8100, "gpus": [2]},
                {"id": 1, "unit": "inference-vllm@1.service", "port": 8101, "gpus": [3]},
            ],
        ),
    ],
)
def test_instances_get_consecutive_ports_and_gpu_slices(ids, gpus, per_instance, expected):
    assert layout.inference_instances(ids, "vllm", 8100, gpus, per_instance) == expected


ENGINE = {
    "engine": "vllm",
    "version": "0.33.0",
    "probe_interval": 10,
    "instances": [{"id": 0, "unit": "inference-vllm@0.service", "port": 8100, "gpus": [0]}],
    "settings_digest": "e1",
}
MODEL = {"source": "hf", "repo": "Qwen/Qwen3-VL-8B-Instruct", "revision": "0c351dd", "path": "/opt/dlami/nvme/m"}
GATEWAY = {"unit": "nginx.service", "ports": [8000], "settings_digest": "g1"}
METRICS = {"port": 9500, "targets": [{"path": "/metrics/node", "port": 9100}], "settings_digest": "m1"}


def test_the_manifest_digest_follows_every_part():
    manifest = layout.inference_manifest(ENGINE, MODEL, GATEWAY, METRICS)
    assert {k: manifest[k] for k in ("engine", "model", "gateway", "metrics")} == {
        "engine": ENGINE,
        "model": MODEL,
        "gateway": GATEWAY,
        "metrics": METRICS,
    }
    assert layout.inference_manifest(dict(ENGINE), dict(MODEL), dict(GATEWAY), dict(METRICS)) == manifest  # stable
    for changed in (
        layout.inference_manifest(ENGINE | {"version": "0.33.1"}, MODEL, GATEWAY, METRICS),
        layout.inference_manifest(ENGINE, MODEL | {"revision": "1d2e3f4"}, GATEWAY, METRICS),
        layout.inference_manifest(ENGINE, MODEL, GATEWAY | {"settings_digest": "g2"}, METRICS),
        layout.inference_manifest(ENGINE, MODEL, GATEWAY, METRICS | {"port": 9501}),
    ):
        assert changed["settings_digest"] != manifest["settings_digest"]


def test_the_manifest_holds_what_it_is_given_and_no_more():
    assert set(layout.inference_manifest(ENGINE, MODEL, GATEWAY, METRICS)) == {
        "schema",
        "engine",
        "model",
        "gateway",
        "metrics",
        "settings_digest",
    }


@pytest.mark.parametrize(
    ("running", "differences"),
    [
        (layout.inference_manifest(ENGINE, MODEL, GATEWAY, METRICS), []),
        (layout.inference_manifest(ENGINE | {"version": "0.32.0"}, MODEL, GATEWAY, METRICS), ["engine"]),
        (
            layout.inference_manifest(ENGINE, MODEL | {"path": "/x"}, GATEWAY | {"ports": [9000]}, METRICS),
            ["model", "gateway"],
        ),
        ({}, ["engine", "model", "gateway", "metrics"]),  # never converged by this kit
        (None, ["engine", "model", "gateway", "metrics"]),
    ],
)
def test_what_a_host_runs_against_the_settings(running, differences):
    configured = layout.inference_manifest(ENGINE, MODEL, GATEWAY, METRICS)
    assert layout.inference_manifest_differences(running, configured) == differences


EXPORTER_PORTS = {"node": 9100, "gateway": 3903, "nginx": 9113, "gpu": 9400}


def test_the_metrics_listener_serves_each_exporter_and_each_instance():
    instances = layout.inference_instances([0, 1], "vllm", 8100, [0, 1, 2, 3], 2)
    targets = layout.inference_metrics_targets(instances, True, EXPORTER_PORTS)
    assert [target["path"] for target in targets] == [
        "/metrics/node",
        "/metrics/gateway",
        "/metrics/nginx",
        "/metrics/gpu",
        "/metrics/engine/0",
        "/metrics/engine/1",
    ]
    assert [target["port"] for target in targets] == [9100, 3903, 9113, 9400, 8100, 8101]
    assert targets[4]["labels"] == {"exporter": "engine", "engine_instance": "0", "gpu": "0,1"}
    assert targets[5]["labels"] == {"exporter": "engine", "engine_instance": "1", "gpu": "2,3"}


def test_a_host_without_gpus_has_no_gpu_exporter_and_unlabelled_gpus():
    instances = layout.inference_instances([0], "vllm", 8100, [], 1)
    targets = layout.inference_metrics_targets(instances, False, EXPORTER_PORTS)
    assert "/metrics/gpu" not in [target["path"] for target in targets]
    assert targets[-1]["labels"] == {"exporter": "engine", "engine_instance": "0", "gpu": ""}
