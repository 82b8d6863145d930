"""SGLang: the engines' own parsers judge what the kit renders; install and configure on a test host; switches.

SGLang cannot serve without a GPU. The host converges engine=sglang with inference_engine_start
false, behind a stand-in nvidia-smi that prints real output, and installs the SGLang wheel
without its CUDA dependency set (KIT_SGLANG_FULL=1 installs all of it from PyPI instead).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

import kit

_capacity = importlib.util.spec_from_file_location(
    "capacity", kit.REPO / "roles" / "capacity_benchmark" / "filter_plugins" / "capacity.py"
)
CAPACITY = importlib.util.module_from_spec(_capacity)
_capacity.loader.exec_module(CAPACITY)

MODEL = "/var/lib/inference/models/tiny-vision"
# The SGLang wheel without its CUDA dependency set, plus the one dependency its kernel builds run by
# name (ninja, which flashinfer-python requires): the kit's toolchain check looks for it.
WHEEL_ONLY = ["--no-index", "--find-links", "/wheelhouse", "--no-deps", "ninja"]
SGLANG = {
    "engine": "sglang",
    "inference_engine_build": "cuda",
    "inference_engine_start": False,
    "inference_engine_pip_extra_args": [] if os.environ.get("KIT_SGLANG_FULL") == "1" else WHEEL_ONLY,
    # The Debian test host's package sources have no NVIDIA repository (tests/test_1_preflight.py).
    "inference_metrics_gpu_exporter_package": "",
}
# More settings the contract tests render, each with what the engine's parser must make of them.
SGLANG_VARIANTS = {
    "defaults": ({}, {"mem_fraction_static": 0.8, "context_length": 512, "limit_mm_data_per_request": {"image": 1}}),
    "tuned": (
        {
            "sglang_server_mem_fraction_static": 0.7,
            "inference_engine_context_length": 4096,
            "inference_engine_max_sequences": 32,
            "inference_engine_mm_limits": {},
            "sglang_server_options": {"chunked-prefill-size": 8192, "allowed-media-domains": ["a.test", "b.test"]},
        },
        {
            "mem_fraction_static": 0.7,
            "context_length": 4096,
            "max_running_requests": 32,
            "limit_mm_data_per_request": None,
            "chunked_prefill_size": 8192,
            "allowed_media_domains": ["a.test", "b.test"],
        },
    ),
}

SGLANG_PARSE = """
import json, sys
from sglang.srt.server_args import prepare_server_args
args = prepare_server_args(sys.argv[2:])
print(json.dumps({name: getattr(args, name) for name in sys.argv[1].split(",")}, default=str))
"""
VLLM_PARSE = """
import json, sys
from vllm.entrypoints.common.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
print(json.dumps(vars(make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])), default=str))
"""
# What SGLang runs in every process before it logs anything (sglang.srt.utils.common), and the
# statement sglang.srt.entrypoints.engine logs its options with (_server_args_for_logging).
SGLANG_STARTUP_LOG = """
import logging, sys
from sglang.srt.sampling.watermarking.core import redact_watermark_secrets
from sglang.srt.server_args import prepare_server_args
from sglang.srt.utils.common import configure_logger
args = prepare_server_args(sys.argv[1:])
configure_logger(args)
logging.getLogger("sglang.srt.entrypoints.engine").info(f"server_args={redact_watermark_secrets(args.resolved_dict())}")
logging.getLogger("sglang.srt.managers.scheduler").info("an ordinary INFO line")
"""


def converge(keys, extra: dict, playbook: str = "playbooks/serve.yml", *args: str) -> kit.Run:
    run = kit.playbook(playbook, *args, "-e", json.dumps(extra), secrets_file=keys["file"], quiet=True)
    assert run.rc == 0, run.output[-4000:]
    return run


def rendered_argv(engine: str, workdir: Path) -> list[str]:
    """The engine's arguments as start_server.sh passes them, with the config fetched to workdir."""
    script = kit.host_sh(f"cat /opt/inference/{engine}/start_server.sh").stdout
    exec_line = next(line for line in script.splitlines() if line.startswith("exec "))
    port = re.search(r"^ENGINE_PORT=(\d+)$", kit.host_sh(f"cat /etc/inference/{engine}-0.env").stdout, re.M)[1]
    config = workdir / f"{engine}.yaml"
    config.write_text(kit.host_sh(f"cat /etc/inference/{engine}.yaml").stdout)
    words = shlex.split(exec_line)[1:]
    on_host = (f"/etc/inference/{engine}.yaml", f"${{CREDENTIALS_DIRECTORY}}/{engine}.yaml")
    words = [config.as_posix() if w in on_host else w.replace("${ENGINE_PORT}", port) for w in words]
    return words[words.index("--config") :]


def parse(engine: str, code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    python = kit.parser_venv(engine) / "bin" / "python"
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu", **(env or {}))  # vLLM's CUDA wheel would look for a GPU
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, env=env)


def sglang_options(argv: list[str], names: list[str]) -> dict:
    result = parse("sglang", SGLANG_PARSE, ",".join(names), *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def serving_vllm() -> bool:
    """The test host serves vLLM and no SGLang files (the earlier test files leave it so, with the
    model on the instance store)."""
    return kit.host_sh("systemctl is-active --quiet inference-vllm@0 && ! ls /etc/inference/sglang*").returncode == 0


@pytest.fixture(scope="module")
def vllm_host(host, keys):
    """The test host serving vLLM (converged here when this file runs alone)."""
    if not serving_vllm():
        converge(keys, {}, "site.yml")
    return host


@pytest.fixture(scope="module")
def sglang_host(vllm_host, keys):
    """The test host, converged to SGLang (installed and configured, not started)."""
    kit.install_fake_nvidia_smi(vllm_host)
    first = converge(keys, SGLANG)
    yield first
    if not serving_vllm():  # the last tests switch back; when they did not run, back to vLLM here
        converge(keys, {}, "site.yml")
    kit.remove_fake_nvidia_smi(vllm_host)


def test_switching_to_sglang_frees_vllm_and_keeps_the_model(sglang_host, keys):
    """After test_3_instance_store.py the model comes back from the instance store as well."""
    assert sglang_host.recap()["changed"] > 0
    units = kit.host_sh("systemctl list-unit-files --no-legend 'inference-*' ; ls /etc/inference").stdout
    assert "vllm" not in units and "inference-sglang@.service" in units, units
    assert kit.host_sh("systemctl is-active inference-sglang@0 inference-readiness").stdout.split() == ["inactive"] * 2
    assert kit.host_sh("systemctl is-enabled inference-sglang@0").stdout.strip() == "enabled"
    assert ":8100" not in kit.host_sh("ss -Hltn").stdout
    assert kit.host_sh(f"test -f {MODEL}/config.json && test -x /opt/inference/vllm/venv/bin/python").returncode == 0
    assert kit.host_sh("systemctl cat inference-model-cache.service").returncode != 0  # the instance store's


@pytest.mark.parametrize("variant", SGLANG_VARIANTS)
def test_sglang_parser_accepts_what_the_kit_renders(sglang_host, keys, tmp_path, variant):
    settings, expected = SGLANG_VARIANTS[variant]
    if settings:  # the defaults are what the host has since sglang_host; the others need the files only
        converge(keys, {**SGLANG, **settings}, "playbooks/serve.yml", "--tags", "inference_engine_configure")
    argv = rendered_argv("sglang", tmp_path)
    fixed = {
        "model_path": MODEL,
        "served_model_name": "tiny-vision",
        "api_key": keys["vault_inference_engine_internal_key"],
        "host": "127.0.0.1",
        "port": 8100,
        "enable_metrics": True,
        "tp_size": 1,
        "uvicorn_access_log_exclude_prefixes": ["/health", "/metrics"],
    }
    assert sglang_options(argv, [*fixed, *expected]) == {**fixed, **expected}


def test_the_sglang_contract_test_can_fail(sglang_host, tmp_path):
    argv = rendered_argv("sglang", tmp_path)
    config = Path(argv[1])
    config.write_text(config.read_text() + "no-such-option: 1\n")
    assert parse("sglang", SGLANG_PARSE, "port", *argv).returncode != 0
    # SGLang's config file takes no --x/--no-x switch: such options belong in inference_engine_extra_args.
    config.write_text(config.read_text().replace("no-such-option: 1\n", "enable-tf32-matmul: true\n"))
    switch = parse("sglang", SGLANG_PARSE, "port", *argv)
    assert switch.returncode != 0 and "Unsupported config option" in switch.stderr + switch.stdout


def test_sglang_startup_log_does_not_show_the_key(sglang_host, keys, tmp_path):
    """SGLang's own logging setup, with and without the kit's logging file, on the rendered options."""
    argv = rendered_argv("sglang", tmp_path)
    logging_file = tmp_path / "sglang-logging.json"
    logging_file.write_text(kit.host_sh("cat /etc/inference/sglang-logging.json").stdout)
    internal = keys["vault_inference_engine_internal_key"]
    without = parse("sglang", SGLANG_STARTUP_LOG, *argv)
    assert internal in without.stderr  # what SGLang would put in the journal on its own
    kept = parse("sglang", SGLANG_STARTUP_LOG, *argv, env={"SGLANG_LOGGING_CONFIG_PATH": str(logging_file)})
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert internal not in kept.stderr + kept.stdout and "an ordinary INFO line" in kept.stderr


def test_only_the_silenced_logger_prints_sglang_options():
    """Ties the logging test to SGLang's source: in the serving runtime (sglang/srt), only
    sglang.srt.entrypoints.engine logs the whole options object."""
    package = kit.parser_venv("sglang") / "lib"
    sources = next(package.glob("python3*/site-packages/sglang/srt"))
    whole_object = re.compile(r"(logger\.\w+|print)\(.*server_args(?![.\w])")
    printers = {
        path.relative_to(sources).as_posix()
        for path in sources.rglob("*.py")
        for line in path.read_text(errors="replace").splitlines()
        if whole_object.search(line)
    }
    assert printers == {"entrypoints/engine.py"}


def sglang_benchmark_options() -> tuple[set[str], dict[str, set[str]]]:
    """The options SGLang's serving benchmark (sglang/benchmark/serving.py of the pinned release)
    defines, and the choices of those that list them, read from its source: importing it needs
    SGLang's GPU stack (torchvision and the like), which the parser virtualenv leaves out."""
    package = kit.parser_venv("sglang") / "lib"
    source = next(package.glob("python3*/site-packages/sglang/benchmark/serving.py"))
    tree = ast.parse(source.read_text())
    options, choices = set(), {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument" and call.args:
            name = call.args[0]
            if isinstance(name, ast.Constant) and str(name.value).startswith("--"):
                options.add(name.value)
                for keyword in call.keywords:
                    if keyword.arg == "choices" and isinstance(keyword.value, ast.List):
                        choices[name.value] = {ast.literal_eval(element) for element in keyword.value.elts}
    backends = re.search(r"ASYNC_REQUEST_FUNCS = \{(.*?)\n\}", source.read_text(), re.S)
    choices["--backend"] = set(re.findall(r'^\s+"([a-z0-9-]+)":', backends.group(1), re.M))
    return options, choices


@pytest.mark.parametrize("images", [0, 1])
def test_the_capacity_benchmark_uses_options_the_pinned_sglang_benchmark_has(images):
    argv = CAPACITY.capacity_benchmark_argv(
        "sglang", "/opt/inference/sglang/venv", "http://127.0.0.1:8000", "/models/m", "m",
        {"name": "w", "input_tokens": 64, "output_tokens": 8, "images": images, "image_size": [56, 56]},
        4, 8, "/tmp/w-c4.jsonl", "/tmp/key",
    )  # fmt: skip
    options, choices = sglang_benchmark_options()
    assert "runpy.run_module('sglang.benchmark.serving'" in argv[2]
    used = [word for word in argv if word.startswith("--")]
    assert set(used) <= options, set(used) - options
    for option, allowed in choices.items():
        if option in used:
            assert argv[argv.index(option) + 1] in allowed, (option, allowed)
    assert {"--backend", "--dataset-name"} <= choices.keys()  # the check above checked them


def test_switching_back_to_vllm_removes_sglang_installs_without_starting_then_serves(sglang_host, keys):
    """Back to vLLM with inference_engine_start false (stopped, enabled, out of service), then
    true (serving again)."""
    # Back on the CPU build: without the stand-in GPU, as the files after this one find the host
    # (with it, the instance's environment would name the GPU, and their first converge restart it).
    kit.remove_fake_nvidia_smi(kit.HOST)
    stopped = converge(keys, {"inference_engine_start": False}, "site.yml")
    assert stopped.recap()["changed"] > 0
    assert "Skip hosts whose engines were installed without starting" in stopped.output
    listing = kit.host_sh("systemctl list-unit-files --no-legend; ls /etc/inference /opt/inference/sglang").stdout
    assert "sglang@" not in listing and "sglang.yaml" not in listing and "sglang-" not in listing, listing
    assert "venv" in listing  # SGLang's virtualenv stays for the next switch
    units = "inference-vllm@0 inference-readiness"
    states = kit.host_sh(f"systemctl is-active {units}; systemctl is-enabled inference-vllm@0")
    assert states.stdout.split() == ["inactive", "inactive", "enabled"]
    assert kit.host_sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/ready").stdout == "503"
    # That a converge without starting changes nothing the second time is the sglang_server scenario's
    # idempotence step (molecule/sglang_server), on the same engine role.
    started = converge(keys, {}, "site.yml")
    assert started.recap()["changed"] > 0
    assert kit.host_sh("systemctl is-active inference-vllm@0").stdout.strip() == "active"
    health = kit.host_sh("inference-health-check --base-url http://127.0.0.1:8000 --depth live --ready")
    assert health.returncode == 0, health.stdout + health.stderr
    # A converge of the same settings changing nothing on the host: test_5_aws_registration's site.yml.


def test_vllm_parser_accepts_what_the_kit_renders(vllm_host, keys, tmp_path):
    """vLLM 0.33.0's own parser (the CUDA build's pin) judges what the CPU test host runs, back on
    vLLM with the default settings."""
    argv = rendered_argv("vllm", tmp_path)
    result = parse("vllm", VLLM_PARSE, *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    args = json.loads(result.stdout.splitlines()[-1])
    assert args["model"] == MODEL and args["served_model_name"] == ["tiny-vision"]
    assert (args["host"], args["port"], args["max_model_len"], args["max_num_seqs"]) == ("127.0.0.1", 8100, 512, 8)
    assert (args["shutdown_timeout"], args["gpu_memory_utilization"], args["sse_keep_alive_interval"]) == (20, 0.9, 15)
    assert args["limit_mm_per_prompt"] == {"image": 1} and args["enforce_eager"] is True
    assert args.get("api_key") in (None, "None")  # the key reaches vLLM through VLLM_API_KEY only
