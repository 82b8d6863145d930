#!/usr/bin/env python3
"""Tables and plots from the engine benchmark's result files, and the highest concurrency that meets
a latency objective.

    capacity_report.py RESULTS_DIR --slo-ttft-p95-ms 2000 [--slo-itl-p95-ms 100]

RESULTS_DIR holds <workload>-c<concurrency>.json (vLLM's `bench serve --save-result`) or .jsonl
(SGLang's `--output-file`). Writes there: capacity.csv (a row per workload and concurrency),
capacity.json (the rows and, per workload, the highest concurrency meeting the objective) and
<workload>.png (output tokens per second against p95 time to first token and p95 inter-token
latency, each point labelled with its concurrency, the objective drawn and the chosen point
ringed). A level with failed requests never meets the objective.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

RESULT_NAME = re.compile(r"(?P<workload>[A-Za-z0-9_.]+)-c(?P<concurrency>[0-9]+)\.jsonl?\Z")
# Columns of capacity.csv, as both engines name them in their result files.
FIELDS = [
    "completed",
    "failed",
    "duration",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    *(f"p{p}_{metric}_ms" for metric in ("ttft", "itl", "e2el") for p in (50, 95, 99)),
]
# SGLang's names: e2e_latency, median for p50, total_throughput.
ALIASES = {f"p{p}_e2el_ms": f"p{p}_e2e_latency_ms" for p in (50, 95, 99)} | {"p50_e2el_ms": "median_e2e_latency_ms"}
ALIASES |= {"p50_ttft_ms": "median_ttft_ms", "p50_itl_ms": "median_itl_ms"}
ALIASES |= {"total_token_throughput": "total_throughput"}


def read_result(path: Path) -> dict:
    """The last result in PATH (SGLang appends a line per run)."""
    text = path.read_text()
    return json.loads(text.strip().splitlines()[-1]) if path.suffix == ".jsonl" else json.loads(text)


def row(workload: str, concurrency: int, result: dict) -> dict:
    values = {"workload": workload, "concurrency": concurrency}
    for field in FIELDS:
        values[field] = result.get(field, result.get(ALIASES.get(field, "")))
    if values["failed"] is None:  # SGLang counts no failures: its --output-details lists each request's error
        values["failed"] = sum(1 for error in result.get("errors", []) if error)
    return values


def rows(directory: Path) -> list[dict]:
    found = []
    for path in directory.iterdir():
        if match := RESULT_NAME.match(path.name):
            found.append(row(match["workload"], int(match["concurrency"]), read_result(path)))
    return sorted(found, key=lambda r: (r["workload"], r["concurrency"]))


def meets(level: dict, ttft_p95_ms: float, itl_p95_ms: float | None) -> bool:
    if level["failed"] or not level["completed"]:
        return False
    if level["p95_ttft_ms"] is None or level["p95_ttft_ms"] > ttft_p95_ms:
        return False
    return itl_p95_ms is None or (level["p95_itl_ms"] is not None and level["p95_itl_ms"] <= itl_p95_ms)


def verdicts(levels: list[dict], ttft_p95_ms: float, itl_p95_ms: float | None) -> dict[str, dict]:
    """Per workload: the highest concurrency meeting the objective (None: none does) and its level."""
    out = {}
    for workload in sorted({level["workload"] for level in levels}):
        own = [level for level in levels if level["workload"] == workload]
        passing = [level for level in own if meets(level, ttft_p95_ms, itl_p95_ms)]
        best = max(passing, key=lambda level: level["concurrency"], default=None)
        out[workload] = {
            "highest_concurrency_meeting_slo": best["concurrency"] if best else None,
            "output_throughput_there": best["output_throughput"] if best else None,
            "levels": [level["concurrency"] for level in own],
        }
    return out


def plot(levels: list[dict], workload: str, best: int | None, slo: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    own = [level for level in levels if level["workload"] == workload and level["completed"]]
    figure, axes = pyplot.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for axis, metric, label, limit in (
        (axes[0], "p95_ttft_ms", "p95 time to first token (ms)", slo["ttft_p95_ms"]),
        (axes[1], "p95_itl_ms", "p95 inter-token latency (ms)", slo["itl_p95_ms"]),
    ):
        points = [(level["output_throughput"], level[metric], level["concurrency"]) for level in own]
        points = [p for p in points if p[1] is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        for x, y, concurrency in points:
            axis.annotate(f"c={concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if limit is not None:
            axis.axhline(limit, color="tab:red", linestyle="--", label=f"objective {limit:g} ms")
        chosen = [p for p in points if p[2] == best]
        if chosen:
            axis.scatter([chosen[0][0]], [chosen[0][1]], s=200, facecolors="none", edgecolors="tab:green",
                         linewidths=2, label=f"highest concurrency meeting it: {best}")  # fmt: skip
        axis.set_xlabel("output tokens per second")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(f"{workload}: throughput against latency by concurrency")
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--slo-ttft-p95-ms", type=float, required=True)
    parser.add_argument("--slo-itl-p95-ms", type=float, default=None)
    args = parser.parse_args(argv)
    levels = rows(args.results)
    if not levels:
        print(f"no <workload>-c<concurrency>.json results in {args.results}", file=sys.stderr)
        return 1
    slo = {"ttft_p95_ms": args.slo_ttft_p95_ms, "itl_p95_ms": args.slo_itl_p95_ms}
    found = verdicts(levels, args.slo_ttft_p95_ms, args.slo_itl_p95_ms)
    with (args.results / "capacity.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["workload", "concurrency", *FIELDS])
        writer.writeheader()
        writer.writerows(levels)
    summary = {"slo": slo, "workloads": found, "levels": levels}
    (args.results / "capacity.json").write_text(json.dumps(summary, indent=2) + "\n")
    for workload, verdict in found.items():
        plot(levels, workload, verdict["highest_concurrency_meeting_slo"], slo, args.results / f"{workload}.png")
        best = verdict["highest_concurrency_meeting_slo"]
        print(
            f"{workload}: "
            + (
                f"concurrency {best} is the highest meeting the objective ({verdict['output_throughput_there']:.1f} "
                "output tokens/s)"
                if best
                else "no concurrency tried meets the objective"
            )  # fmt: skip
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
