"""inference_engine's pure logic: the engine's options, its command line, what a converge removes."""

from __future__ import annotations

import pytest
from kitcode import load

engine = load("roles/inference_engine/filter_plugins/inference_engine.py")
VLLM_NAMES = {
    "model": "model",
    "served_name": "served-model-name",
    "context_length": "max-model-len",
    "mm_limits": "limit-mm-per-prompt",
    "media_domains": "allowed-media-domains",
}
SHARED = {
    "model": "/m",
    "served_name": "tiny",
    "context_length": 4096,
    "mm_limits": {},
    "media_domains": ["no-remote-media.invalid"],
}


def test_shared_settings_take_the_engines_names_and_empty_ones_are_left_out():
    options = engine.inference_engine_options(VLLM_NAMES, SHARED)
    assert options == {
        "model": "/m",
        "served-model-name": "tiny",
        "max-model-len": 4096,
        "allowed-media-domains": ["no-remote-media.invalid"],
    }
    assert list(options) == ["model", "served-model-name", "max-model-len", "allowed-media-domains"]  # the file's order


def test_later_option_sets_win():
    options = engine.inference_engine_options(
        VLLM_NAMES,
        SHARED,
        {"dtype": "float32", "max-model-len": 2048},
        {"dtype": "bfloat16", "limit-mm-per-prompt": {"image": 2}},
    )
    assert options["dtype"] == "bfloat16"
    assert options["max-model-len"] == 2048
    assert options["limit-mm-per-prompt"] == {"image": 2}


@pytest.mark.parametrize(
    ("on_command_line", "expected"),
    [(True, {"allowed-media-domains": ["a.example", "b.example"]}), (False, {})],
)
def test_only_engines_that_ask_get_list_options_on_the_command_line(on_command_line, expected):
    options = {"model": "/m", "allowed-media-domains": ["a.example", "b.example"], "limit-mm-per-prompt": {"image": 2}}
    assert engine.inference_engine_list_options(options, on_command_line) == expected


@pytest.mark.parametrize(
    ("command", "config", "lists", "extra", "line"),
    [
        (["/opt/inference/vllm/venv/bin/vllm", "serve"], "/etc/inference/vllm.yaml", {}, [],
         '/opt/inference/vllm/venv/bin/vllm serve --config /etc/inference/vllm.yaml'
         ' --host 127.0.0.1 --port "${ENGINE_PORT}"'),
        # SGLang: the config is a credential, list-valued options and operator arguments follow
        (["/opt/inference/sglang/venv/bin/python", "-m", "sglang.launch_server"],
         '"${CREDENTIALS_DIRECTORY}/sglang.yaml"',
         {"allowed_media_domains": ["a.example", "b.example"]}, ["--log-level", "info"],
         '/opt/inference/sglang/venv/bin/python -m sglang.launch_server --config "${CREDENTIALS_DIRECTORY}/sglang.yaml"'
         ' --host 127.0.0.1 --port "${ENGINE_PORT}" --allowed-media-domains a.example b.example --log-level info'),
        # whatever an operator writes reaches the engine as one word each, never as shell
        (["/v/bin/vllm", "serve"], "/c.yaml", {}, ["--chat-template", "{{ x }}; rm -rf /", "$(id)"],
         "/v/bin/vllm serve --config /c.yaml --host 127.0.0.1 --port \"${ENGINE_PORT}\" --chat-template"
         " '{{ x }}; rm -rf /' '$(id)'"),
    ],
)  # fmt: skip
def test_the_command_line(command, config, lists, extra, line):
    assert engine.inference_engine_command_line(command, config, lists, extra) == line


FOUND = [
    "/etc/inference/vllm.yaml",
    "/etc/inference/vllm-secret.env",
    "/etc/inference/vllm-0.env",
    "/etc/inference/vllm-1.env",
    "/etc/inference/hf-token",
    "/etc/systemd/system/inference-vllm@.service",
]
SGLANG_FOUND = [
    "/etc/inference/sglang.yaml",
    "/etc/inference/sglang-secret.env",
    "/etc/inference/sglang-0.env",
    "/etc/inference/sglang-logging.json",
    "/etc/systemd/system/inference-sglang@.service",
]


@pytest.mark.parametrize(
    ("found", "engine_name", "ids", "instances", "paths"),
    [
        (FOUND, "vllm", [0, 1], [], []),  # nothing to do
        (FOUND, "vllm", [0], ["vllm-1.env"], ["/etc/inference/vllm-1.env"]),  # fewer instances
        # a switch to SGLang: vLLM's instances stop, its files and unit go; its virtualenv stays
        (FOUND, "sglang", [0], ["vllm-0.env", "vllm-1.env"],
         ["/etc/inference/vllm-0.env", "/etc/inference/vllm-1.env", "/etc/inference/vllm.yaml",
          "/etc/inference/vllm-secret.env", "/etc/systemd/system/inference-vllm@.service",
          "/opt/inference/vllm/start_server.sh"]),
        # and back: SGLang's logging config goes too; the model token stays
        (SGLANG_FOUND, "vllm", [0], ["sglang-0.env"],
         ["/etc/inference/sglang-0.env", "/etc/inference/sglang.yaml", "/etc/inference/sglang-secret.env",
          "/etc/inference/sglang-logging.json", "/etc/systemd/system/inference-sglang@.service",
          "/opt/inference/sglang/start_server.sh"]),
    ],
)  # fmt: skip
def test_what_a_converge_stops_and_removes(found, engine_name, ids, instances, paths):
    stale = engine.inference_engine_stale(found, engine_name, ids, "/etc/inference", "/opt/inference")
    assert stale == {"instances": instances, "paths": paths}
