"""The capacity benchmark: each engine's benchmark command, and the report's reading of results
(the highest concurrency meeting the objective; failed requests never meet it)."""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest
from kitcode import load

capacity = load("roles/capacity_benchmark/filter_plugins/capacity.py")
report = load("roles/capacity_benchmark/files/capacity_report.py")

TEXT = {"name": "text", "input_tokens": 1024, "output_tokens": 256, "images": 0}
IMAGE = {"name": "image", "input_tokens": 256, "output_tokens": 128, "images": 2, "image_size": [720, 1280]}


def argv(engine, workload, concurrency=8):
    return capacity.capacity_benchmark_argv(
        engine, "/opt/inference/" + engine + "/venv", "http://127.0.0.1:8000", "/models/qwen", "qwen",
        workload, concurrency, 32, "/tmp/x/text-c8.json", "/tmp/x/key",
    )  # fmt: skip


def option(args, name):
    return args[args.index(name) + 1]


def test_vllm_runs_bench_serve_on_the_chat_endpoint_and_saves_its_result():
    args = argv("vllm", TEXT)
    assert args[:4] == ["/opt/inference/vllm/venv/bin/python", "-c", capacity.VLLM_BENCH_SERVE, "/tmp/x/key"]
    assert (option(args, "--backend"), option(args, "--endpoint")) == ("openai-chat", "/v1/chat/completions")
    assert (option(args, "--model"), option(args, "--served-model-name")) == ("/models/qwen", "qwen")
    assert (option(args, "--max-concurrency"), option(args, "--num-prompts")) == ("8", "32")
    assert (option(args, "--random-input-len"), option(args, "--random-output-len")) == ("1024", "256")
    assert (option(args, "--result-dir"), option(args, "--result-filename")) == ("/tmp/x", "text-c8.json")
    assert option(args, "--dataset-name") == "random" and "--ignore-eos" in args and "--save-result" in args
    assert option(args, "--metric-percentiles") == "50,90,95,99"


def test_vllm_sends_images_of_the_given_size_with_random_mm():
    args = argv("vllm", IMAGE)
    assert option(args, "--dataset-name") == "random-mm"
    assert option(args, "--random-mm-base-items-per-request") == "2"
    assert json.loads(option(args, "--random-mm-limit-mm-per-prompt")) == {"image": 2, "video": 0}
    assert option(args, "--random-mm-bucket-config") == "{(720, 1280, 1): 1.0}"


def test_sglang_runs_its_serving_benchmark_with_fixed_lengths():
    args = argv("sglang", IMAGE)
    assert args[:4] == ["/opt/inference/sglang/venv/bin/python", "-c", capacity.SGLANG_BENCH_SERVING, "/tmp/x/key"]
    assert option(args, "--backend") == "sglang-oai-chat" and option(args, "--random-range-ratio") == "1"
    assert "--served-model-name" not in args and "--output-details" in args
    assert (option(args, "--dataset-name"), option(args, "--image-count")) == ("image", "2")
    assert option(args, "--image-resolution") == "720x1280"
    assert option(args, "--output-file") == "/tmp/x/text-c8.json"


def test_sglang_text_is_random_token_ids_not_sharegpt():
    assert option(argv("sglang", TEXT), "--dataset-name") == "random-ids"


def test_the_key_comes_from_its_file_into_the_environment_not_from_an_argument(tmp_path, monkeypatch):
    """What each prelude does before the benchmark: the key file's content in OPENAI_API_KEY, the
    file's path off the arguments the benchmark parses."""
    key = tmp_path / "key"
    key.write_text("sk-secret\n")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    prelude = capacity.KEY_FROM_FILE.rstrip("; ")
    monkeypatch.setattr("sys.argv", ["-c", str(key), "--backend", "x"])
    exec(prelude, {})  # the kit's own constant
    assert os.environ["OPENAI_API_KEY"] == "sk-secret" and sys.argv == ["-c", "--backend", "x"]
    for engine in ("vllm", "sglang"):
        assert not [a for a in argv(engine, TEXT) if a.startswith("sk-")]


def test_an_unknown_engine_is_an_error():
    with pytest.raises(ValueError, match="no benchmark for engine 'tgi'"):
        argv("tgi", TEXT)


@pytest.mark.parametrize(("concurrency", "expected"), [(1, 32), (8, 32), (16, 64)])
def test_requests_per_level(concurrency, expected):
    assert capacity.capacity_benchmark_prompts(concurrency, 4, 32) == expected


def vllm_result(concurrency, ttft, itl, failed=0):
    """The summary fields vLLM's bench serve --save-result writes (and per-request lists it adds)."""
    return {
        "max_concurrency": concurrency, "completed": 32 - failed, "failed": failed, "duration": 10.0,
        "request_throughput": 3.2, "output_throughput": 100.0 * concurrency, "total_token_throughput": 900.0,
        "p50_ttft_ms": ttft / 2, "p95_ttft_ms": ttft, "p99_ttft_ms": ttft * 1.2,
        "p50_itl_ms": itl / 2, "p95_itl_ms": itl, "p99_itl_ms": itl * 1.2,
        "p50_e2el_ms": 1000.0, "p95_e2el_ms": 2000.0, "p99_e2el_ms": 2500.0, "ttfts": [0.1] * 32,
    }  # fmt: skip


def write(directory, results):
    for name, result in results.items():
        (directory / name).write_text(json.dumps(result))


def test_the_highest_concurrency_meeting_the_objective_is_chosen(tmp_path):
    write(tmp_path, {
        "text-c1.json": vllm_result(1, 200, 20), "text-c8.json": vllm_result(8, 900, 40),
        "text-c16.json": vllm_result(16, 1900, 60), "text-c32.json": vllm_result(32, 4000, 90),
    })  # fmt: skip
    assert report.main([str(tmp_path), "--slo-ttft-p95-ms", "2000"]) == 0
    summary = json.loads((tmp_path / "capacity.json").read_text())
    assert summary["workloads"]["text"]["highest_concurrency_meeting_slo"] == 16
    assert summary["workloads"]["text"]["levels"] == [1, 8, 16, 32]
    assert report.main([str(tmp_path), "--slo-ttft-p95-ms", "2000", "--slo-itl-p95-ms", "50"]) == 0
    assert (
        json.loads((tmp_path / "capacity.json").read_text())["workloads"]["text"]["highest_concurrency_meeting_slo"]
        == 8
    )
    rows = list(csv.DictReader((tmp_path / "capacity.csv").open()))
    assert [r["concurrency"] for r in rows] == ["1", "8", "16", "32"]
    assert (tmp_path / "text.png").read_bytes()[:4] == b"\x89PNG"


def test_a_level_with_failed_requests_never_meets_it(tmp_path):
    write(tmp_path, {"text-c1.json": vllm_result(1, 100, 10), "text-c8.json": vllm_result(8, 100, 10, failed=1)})
    report.main([str(tmp_path), "--slo-ttft-p95-ms", "2000"])
    assert (
        json.loads((tmp_path / "capacity.json").read_text())["workloads"]["text"]["highest_concurrency_meeting_slo"]
        == 1
    )


def test_sglang_failures_are_counted_from_the_errors_it_lists(tmp_path):
    line = {"completed": 3, "p95_ttft_ms": 80.0, "total_throughput": 900.0, "errors": ["", "HTTP 429", "", ""]}
    (tmp_path / "text-c4.jsonl").write_text(json.dumps(line) + "\n")
    level = report.rows(tmp_path)[0]
    assert level["failed"] == 1 and level["total_token_throughput"] == 900.0
    assert not report.meets(level, 2000, None)


def test_sglang_results_are_read_from_their_last_json_line(tmp_path):
    line = {"max_concurrency": 4, "completed": 16, "num_prompts": 16, "request_throughput": 2.0,
            "output_throughput": 300.0, "total_token_throughput": 900.0, "duration": 8.0,
            "median_ttft_ms": 50.0, "p95_ttft_ms": 80.0, "p99_ttft_ms": 90.0, "median_itl_ms": 5.0,
            "p95_itl_ms": 8.0, "p99_itl_ms": 9.0, "median_e2e_latency_ms": 500.0, "p95_e2e_latency_ms": 700.0,
            "p99_e2e_latency_ms": 800.0}  # fmt: skip
    (tmp_path / "text-c4.jsonl").write_text(json.dumps(line | {"p95_ttft_ms": 9999.0}) + "\n" + json.dumps(line) + "\n")
    levels = report.rows(tmp_path)
    assert levels[0]["p95_ttft_ms"] == 80.0 and levels[0]["failed"] == 0 and levels[0]["p50_e2el_ms"] == 500.0


def test_no_results_is_an_error(tmp_path, capsys):
    assert report.main([str(tmp_path), "--slo-ttft-p95-ms", "2000"]) == 1
    assert "no <workload>-c<concurrency>.json results" in capsys.readouterr().err
