"""Registration and site.yml end to end on the test AWS server, with the test host as the fleet's
one instance: its gateway is what the test server's health checks probe (tests/awsmock.py), as an
ALB would. It runs after the host tests (tests/run.sh), on the host they leave serving."""

from __future__ import annotations

import json

import awsmock
import pytest
from traffic import wait_for

import kit


@pytest.fixture(scope="module")
def aws():
    environment = awsmock.Aws()
    yield environment
    environment.server.stop()


E2E = "e2e"
REGISTRATION = "aws_targets : Register every gateway port of every host and deregister the leavers"


@pytest.fixture(scope="module")
def e2e(aws, host, keys):
    instance = aws.run_instance()
    awsmock.probe_targets[f"{instance}:{kit.GATEWAY_PORT}"] = f"http://127.0.0.1:{kit.PUBLISHED_GATEWAY_PORT}"
    settings = {"aws_name": E2E, "aws_enabled": True, "instance_id": instance}
    run = aws.playbook(playbook="site.yml", secrets=keys["file"], **settings)
    assert run.rc == 0, run.output[-4000:]
    return instance, settings, run


def test_site_runs_infrastructure_hosts_and_registration_end_to_end(aws, keys, e2e):
    instance, settings, first = e2e
    assert aws.targets(E2E) == {f"{instance}:{kit.GATEWAY_PORT}": "healthy"}
    # The host serves these settings already (test_4 switched it back to vLLM): only its registration changes.
    assert first.changed_tasks() == {REGISTRATION}, first.output[-3000:]
    # That site.yml then finds nothing to change is the day-2 fleet's (tests/test_6_operations.py: its
    # check mode shows a pending engine setting and nothing else). --check of the host side is
    # tested there and in each role's scenario, of aws.yml in test_5_aws.py; here the registration's.
    check = aws.playbook("--check", playbook="playbooks/register.yml", secrets=keys["file"], **settings)
    assert check.rc == 0 and check.recap()["changed"] == 0, check.output[-3000:]


def test_the_load_balancer_role_keeps_the_registered_targets(aws, e2e):
    """community.aws.elb_target_group deregisters every target by default (modify_targets)."""
    instance, settings, _ = e2e
    run = aws.playbook(**settings)
    assert run.rc == 0, run.output[-3000:]
    assert aws.targets(E2E) == {f"{instance}:{kit.GATEWAY_PORT}": "healthy"}


def test_hosts_that_left_the_inventory_are_deregistered_unless_most_of_the_fleet_would_go(aws, keys, e2e):
    """An inventory that lost hosts (a failed source, another region) looks like hosts that left."""
    instance, settings, _ = e2e
    former = [aws.run_instance() for _ in range(2)]
    group = aws.elb.describe_target_groups(Names=[E2E])["TargetGroups"][0]["TargetGroupArn"]
    aws.elb.register_targets(TargetGroupArn=group, Targets=[{"Id": i, "Port": kit.GATEWAY_PORT} for i in former])
    gone = {f"{i}:{kit.GATEWAY_PORT}" for i in former}
    register = {"playbook": "playbooks/register.yml", "secrets": keys["file"]}
    refused = aws.playbook(**register, **settings)
    assert refused.rc != 0, refused.output[-3000:]
    assert refused.said("Registration would deregister 2 of the 3 instances the target group routes to")
    assert gone <= set(aws.targets(E2E)) and "draining" not in aws.targets(E2E).values()
    run = aws.playbook(**register, **settings, aws_targets_deregister_max_percent=100)
    assert run.rc == 0, run.output[-3000:]
    # Deregistered targets drain for the deregistration delay, as on AWS.
    assert aws.targets(E2E) == {f"{instance}:{kit.GATEWAY_PORT}": "healthy"} | dict.fromkeys(gone, "draining")


def test_site_refuses_to_serve_when_the_inventory_misses_the_instances_it_runs(aws, keys, host):
    """The local inventory has test host 1 only: the instance site.yml launches is not in it."""
    settings = {"aws_name": "lost", "aws_enabled": True, "aws_instances_count": 1}
    run = aws.playbook(playbook="site.yml", secrets=keys["file"], **settings)
    assert run.rc != 0, run.output[-3000:]
    (launched,) = [i["InstanceId"] for i in aws.instances("lost")]
    assert run.said(f'{launched} run for lost in us-east-1, but the inventory\'s "inference" group does not')
    assert "PLAY [Preflight" not in run.output


def test_registration_without_an_instance_id_or_target_group_says_what_to_do(aws, keys, e2e):
    _, settings, _ = e2e
    register = {"playbook": "playbooks/register.yml", "secrets": keys["file"]}
    anonymous = aws.playbook(**register, **(settings | {"instance_id": ""}))
    assert anonymous.rc != 0 and f"{kit.HOST} has no instance_id" in anonymous.output, anonymous.output[-3000:]
    nowhere = aws.playbook(**register, **(settings | {"aws_name": "nowhere"}))
    assert nowhere.rc != 0 and "There is no target group nowhere" in nowhere.output, nowhere.output[-3000:]


def test_a_target_that_is_not_ready_is_not_reported_healthy(aws, keys, e2e):
    instance, settings, _ = e2e
    target = f"{instance}:{kit.GATEWAY_PORT}"
    kit.host_sh("touch /var/lib/inference-gateway/draining")  # the gateway's /ready answers 503
    try:
        # As on AWS, unhealthy_threshold failed checks in a row first.
        wait_for(lambda: aws.targets(E2E)[target] == "unhealthy", 60, "the health checks to fail")
        run = aws.playbook(playbook="playbooks/register.yml", secrets=keys["file"], aws_targets_healthy_timeout=10,
                           **settings)  # fmt: skip
    finally:
        kit.host_sh("rm -f /var/lib/inference-gateway/draining")
    assert run.rc != 0, run.output[-3000:]
    assert run.said(f"{target} is unhealthy (Target.ResponseCodeMismatch)"), run.output[-3000:]
    wait_for(lambda: aws.targets(E2E)[target] == "healthy", 60, "the health checks to pass again")


def test_the_smoke_playbook_times_the_hosts_target_on_the_load_balancer(aws, keys, e2e, tmp_path):
    """With aws_enabled, smoke.yml deregisters the host's target (draining for the delay, as on AWS),
    registers it again and reports the seconds each step took; the target ends healthy. And it asks
    IAM whether the caller may make the kit's calls on the fleet."""
    instance, settings, _ = e2e
    group = aws.elb.describe_target_groups(Names=[E2E])["TargetGroups"][0]["TargetGroupArn"]
    attribute = "deregistration_delay.timeout_seconds"
    (kept,) = [a["Value"] for a in aws.elb.describe_target_group_attributes(TargetGroupArn=group)["Attributes"]
               if a["Key"] == attribute]  # fmt: skip
    # A short delay for this test alone (the kit's 900 s is the drain the day-2 tests wait out).
    aws.elb.modify_target_group_attributes(TargetGroupArn=group, Attributes=[{"Key": attribute, "Value": "30"}])
    try:
        report = {"inference_smoke_report_dir": str(tmp_path)}
        run = aws.playbook(playbook="playbooks/smoke.yml", secrets=keys["file"], **report, **settings)
    finally:
        aws.elb.modify_target_group_attributes(TargetGroupArn=group, Attributes=[{"Key": attribute, "Value": kept}])
    assert run.rc == 0, run.output[-4000:]
    report = json.loads((tmp_path / f"{kit.HOST}.json").read_text())
    (timed,) = [r for r in report["results"] if r["check"].startswith("target deregistered")]
    assert timed["result"] == "pass", timed
    detail = dict(line.split(" ", 1) for line in timed["detail"])
    assert detail["target"] == f"{instance}:{kit.GATEWAY_PORT}"
    assert float(detail["seen_draining_seconds"]) <= float(detail["drain_seconds"]), detail
    # The drain lasts the deregistration delay at the test server's time scale.
    assert float(detail["drain_seconds"]) >= 30 * awsmock.DRAIN_TIME_SCALE * 0.9, detail
    assert float(detail["healthy_again_seconds"]) > 0, detail
    assert aws.targets(E2E) == {f"{instance}:{kit.GATEWAY_PORT}": "healthy"}
    # IAM's answer for the kit's user on every call the kit makes on the fleet (roles/aws_permissions).
    (permissions,) = [r for r in report["results"] if r["check"].startswith("the caller may make the kit's AWS calls")]
    assert permissions["result"] == "pass", permissions
    assert permissions["detail"].startswith("IAM allows all"), permissions
    assert f"calls on fleet {E2E} to arn:aws:iam::123456789012:user/kit-control-node-" in permissions["detail"]


def test_the_control_node_policy_holds_exactly_the_actions_the_kit_called(aws, request):
    """Runs last, after every test of both AWS files ran as the policy's user: an action the policy
    lacks failed a test there; one the kit never called fails here."""
    if not awsmock.ran_in_full(request.config):
        pytest.skip("compares with what the whole of both AWS files called")
    without_a_host = awsmock.saved_calls("test_5_aws")
    if without_a_host is None:
        pytest.skip("compares with what tests/test_5_aws.py called too: run both files")
    called = aws.called() | without_a_host
    allowed = awsmock.policy_actions(json.loads(awsmock.CONTROL_NODE_POLICY.read_text()))
    assert called == allowed, sorted(called ^ allowed)
