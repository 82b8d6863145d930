"""End to end on a real systemd test host: converge site.yml, then use the server for real."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

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


def test_engine_listens_on_loopback_only(served):
    listeners = kit.host_sh("ss -ltnH").stdout
    assert "127.0.0.1:8100 " in listeners
    assert "0.0.0.0:8100" not in listeners and "*:8100" not in listeners


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


def test_only_openai_and_health_routes_are_reachable(served, alice):
    for path in ("/metrics", "/tokenize", "/invocations", "/version", "/docs", "/"):
        assert http(path, alice)[0] == 404, path
    assert http("/health")[0] == 200
    # The engine still has its metrics, on the host only.
    assert "vllm:" in kit.host_sh("curl -sf http://127.0.0.1:8100/metrics").stdout


def test_engine_refuses_requests_without_the_internal_key(served, alice):
    status = kit.host_sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8100/v1/models").stdout
    assert status == "401"


def test_gateway_logs_client_names_not_keys(served, keys, alice):
    http("/v1/models", alice)
    log = kit.host_sh("cat /var/log/nginx/inference-gateway.log").stdout
    assert "client=alice" in log
    for secret in secret_values(keys):
        assert secret not in log


def test_secrets_stay_out_of_argv_journal_and_world_readable_files(served, keys):
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


def test_readiness_follows_the_engine_and_the_drain_flag(served):
    wait_until_ready()
    kit.host_sh("touch /run/inference-ready/draining")
    try:
        assert http("/ready")[0] == 503
    finally:
        kit.host_sh("rm -f /run/inference-ready/draining")
    assert http("/ready")[0] == 200


def test_killed_engine_is_restarted_ready_and_leaves_nothing_behind(served, alice):
    old_pid = unit_property("MainPID")
    engine_pids = "pgrep -f 'vllm.entrypoints|VLLM::|multiprocessing.resource_tracker'"
    old_processes = set(kit.host_sh(engine_pids).stdout.split())
    assert old_pid in old_processes and len(old_processes) >= 3  # API server, engine core, worker
    restarts = int(unit_property("NRestarts"))
    kit.host_sh(f"kill -9 {old_pid}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if unit_property("ActiveState") == "active" and unit_property("MainPID") not in ("0", old_pid):
            break
        time.sleep(2)
    assert unit_property("ActiveState") == "active"
    assert int(unit_property("NRestarts")) == restarts + 1
    # active means ready: ExecStartPost waited for a real generation.
    assert http("/v1/models", alice)[0] == 200
    still_running = set(kit.host_sh("ps -eo pid=").stdout.split())
    assert not (old_processes & still_running), "processes of the killed engine are still running"
    wait_until_ready()


def test_a_new_client_key_is_a_gateway_reload_not_an_engine_restart(served, keys, tmp_path):
    started = unit_property("ExecMainStartTimestampMonotonic")
    carol = "sk-carol-0123456789abcdef"
    more = {
        "vault_inference_gateway_api_keys": [*keys["vault_inference_gateway_api_keys"], {"name": "carol", "key": carol}]
    }
    run = kit.playbook("playbooks/serve.yml", "-e", json.dumps(more), secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    assert http("/v1/models", carol)[0] == 200
    assert unit_property("ExecMainStartTimestampMonotonic") == started
    assert carol not in run.output
    run = kit.playbook("playbooks/serve.yml", secrets_file=keys["file"])
    assert run.rc == 0
    assert http("/v1/models", carol)[0] == 401


def test_allow_unauthenticated_opens_v1_without_keys_and_nothing_else(served, keys):
    started = unit_property("ExecMainStartTimestampMonotonic")
    open_gateway = {"vault_inference_gateway_api_keys": [], "inference_gateway_allow_unauthenticated": True}
    run = kit.playbook("playbooks/serve.yml", "-e", json.dumps(open_gateway), secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    try:
        assert http("/v1/models")[0] == 200
        assert http("/metrics")[0] == 404
        assert "client=anonymous" in kit.host_sh("tail -n 1 /var/log/nginx/inference-gateway.log").stdout
    finally:
        run = kit.playbook("playbooks/serve.yml", secrets_file=keys["file"])
    assert run.rc == 0
    assert http("/v1/models")[0] == 401
    assert unit_property("ExecMainStartTimestampMonotonic") == started


def test_an_engine_that_cannot_become_ready_fails_instead_of_flapping(served, keys, alice):
    # The tiny model knows 2048 positions at most: vLLM refuses to start with more.
    run = kit.playbook("playbooks/serve.yml", "-e", "inference_engine_context_length=4096", secrets_file=keys["file"])
    assert run.rc != 0
    assert f"Unable to restart service {UNIT}" in run.output
    # systemd starts it three times in all (Restart=on-failure), then refuses (StartLimitBurst=3).
    refused = f"journalctl -u {UNIT} --no-pager | grep -c 'Start request repeated too quickly'"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and kit.host_sh(refused).stdout.strip() in ("", "0"):
        time.sleep(5)
    assert unit_property("ActiveState") == "failed"
    restarts = unit_property("NRestarts")
    time.sleep(15)
    assert unit_property("ActiveState") == "failed" and unit_property("NRestarts") == restarts
    assert http("/ready")[0] == 503
    # Fixing the setting brings it back.
    run = kit.playbook("playbooks/serve.yml", secrets_file=keys["file"])
    assert run.rc == 0, run.output[-3000:]
    assert http("/v1/models", alice)[0] == 200


def test_second_converge_changes_nothing(served, keys):
    run = kit.playbook("site.yml", secrets_file=keys["file"])
    assert run.rc == 0
    assert run.recap()["changed"] == 0, run.output[-4000:]


def test_check_diff_on_the_converged_host_changes_nothing_and_shows_no_secret(served, keys):
    run = kit.playbook("playbooks/serve.yml", "--check", "--diff", secrets_file=keys["file"])
    assert run.rc == 0
    assert run.recap()["changed"] == 0, run.output[-4000:]
    for secret in secret_values(keys):
        assert secret not in run.output
