"""What a re-run applies (roles/inference/filter_plugins/inference_applied.py): a serving role's
inputs are its options, the contract's and the digests of the roles before it, never the switch
that forces a full converge; its digest changes with their values, its code and the contract's;
a model source's fingerprint changes with its files."""

from __future__ import annotations

import os
import shutil

import pytest
from kitcode import REPO, load

applied = load("roles/inference/filter_plugins/inference_applied.py")
ORDER = ["inference_host", "model_cache", "inference_engine", "inference_gateway", "inference_metrics"]


@pytest.fixture
def roles(tmp_path):
    """A copy of the gateway role and of the contract, whose code the digest covers."""
    for role in ("inference", "inference_gateway"):
        shutil.copytree(REPO / "roles" / role, tmp_path / role)
    contract = applied.CONTRACT
    applied.CONTRACT = str(tmp_path / "inference")
    yield tmp_path
    applied.CONTRACT = contract


def digest(roles, values=("8000",)):
    return applied.inference_settings_digest(list(values), str(roles / "inference_gateway"))


def test_the_inputs_are_the_options_and_the_digests_before_but_not_the_full_switch():
    inputs = applied.inference_role_inputs(str(REPO / "roles/inference_gateway"), ORDER)
    assert "inference_gateway_port" in inputs and "inference_host_config_dir" in inputs
    assert "inference_full_converge" not in inputs
    assert inputs[-3:] == ["inference_host_digest", "model_cache_digest", "inference_engine_digest"]
    first_role = applied.inference_role_inputs(str(REPO / "roles/inference_host"), ORDER)
    assert "inference_host_expected_gpus" in first_role and not [i for i in first_role if i.endswith("_digest")]


def test_the_digest_follows_the_values_and_the_code(roles):
    first = digest(roles)
    assert digest(roles) == first
    assert digest(roles, values=("8001",)) != first
    template = roles / "inference_gateway/templates/etc/nginx/nginx.conf.j2"
    template.write_text(template.read_text() + "\n# changed\n")
    changed_role = digest(roles)
    assert changed_role != first
    (roles / "inference/defaults/main.yml").write_text("---\n{}\n")
    assert digest(roles) != changed_role


def test_a_model_source_fingerprint_follows_its_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    first = applied.inference_files_fingerprint(str(tmp_path))
    assert applied.inference_files_fingerprint(str(tmp_path)) == first
    os.utime(tmp_path / "config.json", ns=(1, 1))
    assert applied.inference_files_fingerprint(str(tmp_path)) != first


def test_a_role_applies_when_its_digest_differs_or_is_unknown():
    wanted = ["a", "b", "", "d", "e"]
    recorded = {"inference_host": "a", "model_cache": "old", "inference_engine": "", "inference_gateway": "d"}
    applying = applied.inference_roles_to_apply(ORDER, wanted, recorded)
    assert applying == ["model_cache", "inference_engine", "inference_metrics"]
