"""Bad input fails in preflight with a message naming the variable, and the host stays as it was."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

import kit
from conftest import secret_values

KEY = "kit-test-key-" + "k" * 16  # not a secret: the runs that get it fail in preflight

BAD_INPUTS = [
    ({"engine": "bogus"}, r'engine is "bogus"; valid engines: vllm, sglang'),
    ({"vault_inference_gateway_api_keys": []}, r"No client API key is configured"),
    ({"vault_inference_gateway_api_keys": [{"name": "app", "key": "too-short"}]}, r"a key of 16 to 200 characters"),
    ({"vault_inference_engine_internal_key": ""}, r"inference_engine_internal_key is missing"),
    ({"inference_engine_context_length": "32k"}, r'inference_engine_context_length is "32k"'),
    ({"inference_engine_context_length": 0}, r'inference_engine_context_length is "0"'),
    ({"inference_engine_context_length": -4096}, r'inference_engine_context_length is "-4096"'),
    ({"vllm_server_gpu_memory_utilization": 1.5}, r'vllm_server_gpu_memory_utilization is "1.5"'),
    ({"vllm_server_gpu_memory_utilization": 0}, r'vllm_server_gpu_memory_utilization is "0"'),
    ({"inference_gateway_port": 70000}, r"must lie in 1024-65535"),
    (
        {"inference_gateway_port": 443},
        r"inference_gateway_port 443 gives the gateway ports 443, which must lie in 1024-65535",
    ),
    ({"inference_engine_port": 80}, r'inference_engine_port is "80" .* lie in 1024-65535'),
    ({"inference_engine_port": 65536}, r"inference_engine_port is \"65536\""),
    ({"inference_gateway_port": 8100, "inference_engine_port": 8100}, r"not overlap the engine instances' ports"),
    ({"model_cache_controller_path": "/nonexistent/model"}, r'model_cache_controller_path is "/nonexistent/model"'),
    ({"inference_engine_build": "cuda"}, r"has no NVIDIA GPU"),
    ({"engine": "sglang"}, r'inference_engine_build is "cpu", but sglang has only these builds: cuda'),
    ({"engine": "sglang", "sglang_server_mem_fraction_static": 1}, r'sglang_server_mem_fraction_static is "1"'),
    ({"engine": "sglang", "sglang_server_mem_fraction_static": 0}, r'sglang_server_mem_fraction_static is "0"'),
    ({"engine": "sglang", "sglang_server_mem_fraction_static": "0.8x"}, r'sglang_server_mem_fraction_static is "0.8x"'),
    ({"engine": "sglang", "sglang_server_log_level": "loud"}, r'sglang_server_log_level is "loud"'),
    ({"engine": "sglang", "sglang_server_options": {"api_key": "x"}}, r"sglang_server_options sets api-key"),
    ({"vllm_server_options": {"host": "0.0.0.0", "api-key": "x"}}, r"vllm_server_options sets api-key, host, which"),
    # A trailing newline passed the checks before ($ matches before a final newline).
    (
        {"vault_inference_gateway_api_keys": [{"name": "app", "key": KEY + "\n"}]},
        r'\(name "app"\) is invalid: .*a key of 16',
    ),
    ({"vault_inference_gateway_api_keys": [{"name": "app\n", "key": KEY}]}, r"each entry needs a name of letters"),
    ({"vault_inference_engine_internal_key": KEY + "\n"}, r"inference_engine_internal_key is missing, shorter than 16"),
    (
        {"vault_inference_gateway_api_keys": [{"name": "app", "key": KEY}, {"name": "other", "key": KEY.upper()}]},
        r"two keys differ only in case",
    ),
    # What the kit manages, or keeps off the command line, through the extra arguments and environment.
    ({"inference_engine_extra_args": ["--api-key=" + KEY]}, r"inference_engine_extra_args sets --api-key, which"),
    ({"inference_engine_extra_args": ["--api_key", KEY]}, r"inference_engine_extra_args sets --api-key, which"),
    (
        {"inference_engine_extra_args": ["--host", "0.0.0.0", "--por", "9000", "--uds", "/tmp/engine.sock"]},
        r"inference_engine_extra_args sets --host, --port, --uds, which",
    ),
    (
        {"vault_inference_engine_internal_key": KEY, "inference_engine_extra_args": ["--served-model-name", KEY]},
        r"inference_engine_extra_args sets the value of vault_inference_engine_internal_key, which",
    ),
    ({"inference_engine_environment": {"VLLM_API_KEY": KEY}}, r"inference_engine_environment sets VLLM_API_KEY, which"),
    (
        {"engine": "sglang", "inference_engine_extra_args": ["--admin-api-key", KEY]},
        r"extra_args sets --admin-api-key, which",
    ),
    # LoRA adapters loaded at run time.
    (
        {"inference_engine_environment": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}},
        r"inference_engine_environment sets VLLM_ALLOW_RUNTIME_LORA_UPDATING, which lets vllm load LoRA adapters",
    ),
    (
        {"engine": "sglang", "inference_engine_extra_args": ["--enable-lora"]},
        r"extra_args sets --enable-lora, which lets",
    ),
    (
        {"engine": "sglang", "sglang_server_options": {"lora_paths": ["a=/tmp/a"]}},
        r"options sets lora-paths, which lets",
    ),
    # The revision becomes a directory name.
    ({"model_cache_source": "hf", "model_cache_hf_revision": "refs/pr/1"}, r'model_cache_hf_revision is "refs/pr/1"'),
    ({"model_cache_source": "hf", "model_cache_hf_revision": "..main"}, r'model_cache_hf_revision is "\.\.main"'),
    (
        {"model_cache_source": "hf", "model_cache_hf_revision": "main branch"},
        r'model_cache_hf_revision is "main branch"',
    ),
    # The metrics listener: its own port, and never public.
    ({"inference_metrics_port": 8000}, r"stay clear of the gateway ports 8000"),
    ({"inference_metrics_node_exporter_port": 9500}, r"differ from each other"),
    ({"inference_metrics_allowed_cidrs": ["0.0.0.0/0"]}, r"Not 0\.0\.0\.0/0 or ::/0: metrics name clients"),
    ({"inference_metrics_allowed_cidrs": ["10.0.0.1/8"]}, r"Not ranges: 10\.0\.0\.1/8"),
]


# These go through site.yml itself, which must stop in preflight with the host unchanged: a few
# for the wiring, and those whose message repeats another's in the same check (ansible-core
# prints an identical "[ERROR]: ..." only once per run, and with no_log the result holds no
# message, so in one run of many hosts the second host's message would not show).
THROUGH_SITE = {0, 13, 15, 23, 25}  # engine bogus, overlapping ports, cuda without a GPU; the repeats


@pytest.fixture(scope="module")
def bad_input_runs(host, keys, tmp_path_factory):
    """Each bad input's run and the host's fingerprint before and after them all. Preflight's checks
    run once for all inputs not in THROUGH_SITE: an inventory with one host per input, each the test
    host with that input in its host variables (tests/playbooks/preflight_checks.yml)."""
    before = kit.fingerprint(host)
    # inventory/local's settings and the keys, copied away from what other runs of this lane rewrite
    directory = tmp_path_factory.mktemp("cases") / "inventory"
    shutil.copytree(kit.inventory([kit.LANE], secrets=keys["file"]).parent, directory, symlinks=True)
    inventory = directory / "hosts.yml"
    hosts = json.loads(inventory.read_text())
    port = hosts["inference"]["hosts"][kit.HOST]["ansible_port"]
    cases = {i: extra for i, (extra, _) in enumerate(BAD_INPUTS) if i not in THROUGH_SITE}
    hosts["inference"]["hosts"] = {f"case-{i:02d}": {"ansible_port": port, **extra} for i, extra in cases.items()}
    inventory.write_text(json.dumps(hosts, indent=2))

    def site(extra: dict) -> kit.Run:
        return kit.playbook("site.yml", "-e", json.dumps(extra), secrets_file=keys["file"], quiet=True)

    with ThreadPoolExecutor(max_workers=len(THROUGH_SITE)) as pool:
        through_site = dict(zip(THROUGH_SITE, pool.map(site, (BAD_INPUTS[i][0] for i in THROUGH_SITE)), strict=True))
    checks = kit.playbook("tests/playbooks/preflight_checks.yml", inventory=inventory, quiet=True)
    failed = kit.failures(checks.output)
    runs = {i: kit.Run(checks.rc, failed.get(f"case-{i:02d}", "")) for i in cases} | through_site
    return runs, checks, before, kit.fingerprint(host)


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[json.dumps(e) for e, _ in BAD_INPUTS])
def test_bad_input_fails_in_preflight_and_changes_nothing(bad_input_runs, keys, extra, message):
    runs, checks, before, after = bad_input_runs
    i = BAD_INPUTS.index((extra, message))
    run = runs[i]
    assert run.rc != 0
    assert re.search(message, run.output), run.output[-3000:] or checks.output[-3000:]
    if i in THROUGH_SITE:
        assert "Preflight" in run.output and "Serve |" not in run.output, run.output[-3000:]
    assert after == before
    for secret in secret_values(keys):
        assert secret not in run.output and secret not in checks.output


def test_cuda_build_with_an_old_driver_fails_with_the_detected_version(host, keys):
    real = (kit.NVIDIA_SMI_FIXTURES / "query-gpu-noheader.csv").read_text().strip()
    # No CUDA toolkit: the driver check stops the run before the toolkit's.
    kit.install_fake_nvidia_smi(host, real.replace("580.159.04", "575.57.08"), toolkit=False)
    try:
        before = kit.fingerprint(host)
        run = kit.playbook("site.yml", "-e", "inference_engine_build=cuda", secrets_file=keys["file"])
        assert run.rc != 0
        assert "has NVIDIA driver 575.57.08, but the CUDA build of vllm needs driver 580 or newer" in run.output
        assert kit.fingerprint(host) == before
    finally:
        kit.remove_fake_nvidia_smi(host)


def test_cuda_build_accepts_real_nvidia_smi_output_with_driver_580(host, keys):
    """And a GPU host whose package sources lack NVIDIA's DCGM exporter (the Debian test host has no
    NVIDIA repository) stops in preflight, saying where to get it, unless it runs its own."""
    kit.install_fake_nvidia_smi(host)
    try:
        own_exporter = {"inference_engine_build": "cuda", "inference_metrics_gpu_exporter_package": ""}
        run = kit.playbook("playbooks/preflight.yml", "-e", json.dumps(own_exporter), secrets_file=keys["file"])
        assert run.rc == 0, run.output[-3000:]
        before = kit.fingerprint(host)
        cuda = ("-e", "inference_engine_build=cuda")  # a run that installs: serve.yml (preflight alone does not ask)
        refused = kit.playbook("playbooks/serve.yml", *cuda, secrets_file=keys["file"])
        assert refused.rc != 0
        assert refused.said("has NVIDIA GPUs but no package source offers datacenter-gpu-manager-exporter")
        assert "developer.download.nvidia.com/compute/cuda/repos" in refused.output
        assert kit.fingerprint(host) == before
    finally:
        kit.remove_fake_nvidia_smi(host)


def test_a_gpu_host_without_the_engines_cuda_toolkit_stops_in_preflight(host, keys):
    """The kernel builds at start need nvcc of the engine's CUDA release (13.0): missing, or another
    major release named by inference_engine_cuda_home, is refused before the host changes."""
    kit.install_fake_nvidia_smi(host, toolkit=False)
    old = "/opt/cuda-12.9/bin"
    banner = "Cuda compilation tools, release 12.9, V12.9.86"
    kit.host_sh(f"mkdir -p {old} && printf '#!/bin/sh\\necho \"{banner}\"\\n' > {old}/nvcc && chmod 755 {old}/nvcc")
    try:
        before = kit.fingerprint(host)
        settings = {"inference_engine_build": "cuda", "inference_metrics_gpu_exporter_package": ""}
        missing = kit.playbook("site.yml", "-e", json.dumps(settings), secrets_file=keys["file"])
        assert missing.rc != 0
        assert missing.said(f"has no CUDA 13.0 toolkit at {kit.CUDA_HOME}"), missing.output[-3000:]
        assert missing.said("set inference_engine_cuda_home to a CUDA 13.x toolkit's directory")
        settings["inference_engine_cuda_home"] = "/opt/cuda-12.9"
        other = kit.playbook("site.yml", "-e", json.dumps(settings), secrets_file=keys["file"])
        assert other.rc != 0
        assert other.said("has no CUDA 13.0 toolkit at /opt/cuda-12.9 (release 12.9)"), other.output[-3000:]
        assert kit.fingerprint(host) == before
    finally:
        kit.host_sh("rm -rf /opt/cuda-12.9")
        kit.remove_fake_nvidia_smi(host)


def test_check_diff_on_a_fresh_host_passes_and_shows_no_secret(host, keys):
    before = kit.fingerprint(host)
    run = kit.playbook("playbooks/serve.yml", "--check", "--diff", secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    assert kit.fingerprint(host) == before
    for secret in secret_values(keys):
        assert secret not in run.output


def test_top_level_group_vars_reach_playbooks_run_from_playbooks_dir(host, keys, tmp_path):
    """A value set only in the top-level group_vars/ decides what playbooks/preflight.yml does."""
    copy = tmp_path / "kit"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=kit.REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = kit.REPO / name
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, target)
    settings = copy / "group_vars" / "all" / "main.yml"
    settings.write_text(settings.read_text().replace("engine: vllm", "engine: set-in-top-level-group-vars"))
    run = kit.playbook("playbooks/preflight.yml", secrets_file=keys["file"], cwd=copy)
    assert run.rc != 0
    assert 'engine is "set-in-top-level-group-vars"' in run.output
