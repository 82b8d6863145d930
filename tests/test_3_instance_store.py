"""The model on the instance store: fetched at provision time and again after the store is wiped.

The host stays on the instance store: test_4_sglang.py's switch to SGLang, with the default
model settings, moves the model back to persistent disk and checks that the store's unit is gone.
"""

from __future__ import annotations

import json

import pytest

import kit

NVME = "/opt/dlami/nvme"  # where the Deep Learning Base AMI mounts the instance store
ON_NVME = {"model_cache_instance_store_enabled": True, "model_cache_instance_store_path": NVME}
MODEL = f"{NVME}/inference/models/tiny-vision"


def generate(keys) -> int:
    key = keys["vault_inference_gateway_api_keys"][0]["key"]
    script = (
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/v1/completions "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        """-d '{"model": "tiny-vision", "prompt": "Hi", "max_tokens": 2}'"""
    )
    return int(kit.host_sh(script).stdout)


@pytest.fixture(scope="module")
def on_instance_store(host, keys):
    kit.host_sh(f"mkdir -p {NVME}")
    run = kit.playbook("playbooks/serve.yml", "-e", json.dumps(ON_NVME), secrets_file=keys["file"])
    assert run.rc == 0, run.output[-4000:]


def test_the_engine_loads_the_model_from_the_instance_store(on_instance_store, keys):
    assert f"model: {MODEL}" in kit.host_sh("cat /etc/inference/vllm.yaml").stdout
    assert kit.host_sh(f"test -f {MODEL}/config.json").returncode == 0
    assert generate(keys) == 200


def test_a_wiped_instance_store_is_refilled_before_the_engine_starts(on_instance_store, keys):
    """What a stop/start of the instance does: the store comes back empty and root-owned."""
    wipe = f"systemctl stop inference-vllm@0 inference-model-cache && rm -rf {NVME}/* && chown root: {NVME}"
    assert kit.host_sh(wipe).returncode == 0
    started = kit.host_sh("systemctl start inference-vllm@0")
    assert started.returncode == 0, started.stderr
    assert kit.host_sh(f"test -f {MODEL}/config.json").returncode == 0
    assert generate(keys) == 200


def test_a_missing_instance_store_fails_in_preflight(host, keys):
    extra = dict(ON_NVME, model_cache_instance_store_path="/opt/no-such-store")
    run = kit.playbook("playbooks/serve.yml", "-e", json.dumps(extra), secrets_file=keys["file"])
    assert run.rc != 0
    assert "has no directory" in run.output and "/opt/no-such-store (model_cache_instance_store_path)" in run.output
