"""The IAM simulation's pure parts (roles/aws_permissions/library/iam_policy_simulation.py): the
principal IAM simulates for a caller, the requests derived from the kit's policy, and what a denial
says."""

from __future__ import annotations

import json
import re

import iampolicy
import pytest
import yaml
from kitcode import REPO, load

simulation = load("roles/aws_permissions/library/iam_policy_simulation.py")
POLICY = json.loads((REPO / "docs/aws-iam/control-node-policy.json").read_text())
ROLE_VARS = yaml.safe_load((REPO / "roles/aws_permissions/vars/main.yml").read_text())
ACCOUNT, REGION, FLEET = "123456789012", "eu-west-1", "chat"


@pytest.mark.parametrize(
    ("caller", "source", "role"),
    [
        ("arn:aws:iam::123456789012:user/ops", "arn:aws:iam::123456789012:user/ops", None),
        ("arn:aws:iam::123456789012:user/team/ops", "arn:aws:iam::123456789012:user/team/ops", None),
        # The session ARN has no path: the role's name is looked up (GetRole) for its full ARN.
        (
            "arn:aws:sts::123456789012:assumed-role/deployer/ci-42",
            "arn:aws:iam::123456789012:role/deployer",
            "deployer",
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Admin_0a1b/alice@example.com",
            "arn:aws:iam::123456789012:role/AWSReservedSSO_Admin_0a1b",
            "AWSReservedSSO_Admin_0a1b",
        ),
        (
            "arn:aws-cn:sts::123456789012:assumed-role/deployer/x",
            "arn:aws-cn:iam::123456789012:role/deployer",
            "deployer",
        ),
    ],
)
def test_the_principal_iam_simulates_for_a_caller(caller, source, role):
    assert simulation.principal(caller) == (source, role, "")


@pytest.mark.parametrize(
    ("caller", "why"),
    [
        ("arn:aws:iam::123456789012:root", "root user"),
        ("arn:aws:sts::123456789012:federated-user/bob", "users and roles only"),
        ("not-an-arn", "is not an ARN"),
    ],
)
def test_callers_iam_cannot_simulate_say_why(caller, why):
    source, role, reason = simulation.principal(caller)
    assert (source, role) == (None, None) and why in reason


def test_a_region_or_account_of_star_becomes_the_runs():
    assert (
        simulation.fill("arn:aws:ec2:*:*:instance/*", REGION, ACCOUNT) == f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    )
    assert simulation.fill("arn:aws:ec2:*::image/*", REGION, ACCOUNT) == f"arn:aws:ec2:{REGION}::image/*"
    assert simulation.fill("*", REGION, ACCOUNT) == "*"


def statement(sid: str) -> dict:
    return next(s for s in POLICY["Statement"] if s.get("Sid") == sid)


def test_a_key_naming_the_situation_is_asked_once_per_value_and_null_true_keys_are_left_out():
    context = {"aws:ResourceTag/inference-kit:fleet": FLEET, "aws:RequestTag/inference-kit:fleet": FLEET}
    tagging = simulation.situations(statement("TagOnCreate"), context)
    assert sorted(s["elasticloadbalancing:CreateAction"] for s in tagging) == [
        "CreateListener", "CreateLoadBalancer", "CreateRule", "CreateTargetGroup",
    ]  # fmt: skip
    (untagged,) = simulation.situations(statement("TagANewTargetGroupIntoTheFleet"), context)
    assert "aws:ResourceTag/inference-kit:fleet" not in untagged  # a target group not tagged yet
    (launch,) = simulation.situations(statement("LaunchG6eInstances"), context)
    assert launch == context  # ...IfExists keys the context lacks stay absent


def role_vars(fleet: str = FLEET, launch: dict | None = None) -> tuple[dict, dict, list]:
    """The role's resources, context and skip list as Ansible renders them, for FLEET and LAUNCH."""
    launch = launch or {}

    def render(text: str) -> str:
        text = text.replace("{{ aws_name }}", fleet)
        return re.sub(r"\{\{ aws_permissions_launch.instance_profile \| default\('\*'\) \}\}", "*", text)

    resources = {pattern: render(arn) for pattern, arn in ROLE_VARS["__aws_permissions_resources"].items()}
    context = {
        "aws:RequestTag/inference-kit:fleet": fleet,
        "aws:ResourceTag/inference-kit:fleet": fleet,
        "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com",
        "iam:PassedToService": "ec2.amazonaws.com",
    }
    if launch:
        context |= {"ec2:InstanceType": launch["instance_type"], "ec2:Owner": launch["image_owner"],
                    "ec2:MetadataHttpTokens": "required", "ec2:Encrypted": True, "ec2:VolumeType": "gp3"}  # fmt: skip
    for key in context:  # the role's context has exactly these keys
        assert key in ROLE_VARS["__aws_permissions_context"], key
    skip = ["CheckTheCallersOwnPermissions"] + ([] if launch else ["ReadTheDeepLearningAmiIds", "LaunchG6eInstances"])
    skip += [] if launch.get("instance_profile") else ["ReadInstanceProfiles", "GiveTheHostsTheirInstanceProfile"]
    return resources, context, skip


def test_each_fleet_arn_is_one_the_policys_pattern_names():
    resources, _, _ = role_vars()
    patterns = {r for s in POLICY["Statement"] for r in simulation.listed(s["Resource"])}
    for pattern, arn in resources.items():
        assert pattern in patterns, f"{pattern} is not in the policy"
        assert iampolicy.arn_matches(pattern, arn), (pattern, arn)
        assert FLEET in arn or pattern.endswith("instance-profile/*"), arn


def test_the_kits_own_policy_allows_every_request_it_describes():
    """The requests derived from the policy, evaluated as AWS would (tests/iampolicy.py) with the
    policy alone: all allowed, its Deny statements included (the run's tags and launch settings)."""
    launch = {"instance_type": "g6e.12xlarge", "image_owner": "amazon", "instance_profile": "kit-hosts"}
    resources, context, skip = role_vars(launch=launch)
    context |= {"aws:PrincipalAccount": ACCOUNT, "aws:PrincipalArn": f"arn:aws:iam::{ACCOUNT}:user/ops"}
    batches = simulation.requests(POLICY, resources, context, skip, REGION, ACCOUNT)
    asked = {(sid, action) for sid, actions, _, _, _ in batches for action in actions}
    assert ("LaunchG6eInstances", "ec2:RunInstances") in asked and ("TagOnLaunch", "ec2:CreateTags") in asked
    assert "CheckTheCallersOwnPermissions" not in {sid for sid, *_ in batches}
    for sid, actions, arns, situation, _ in batches:
        for action in actions:
            for arn in arns:
                decision = iampolicy.evaluate([POLICY], iampolicy.Request(action, arn, situation))
                assert decision.allowed, (sid, action, arn, situation, decision)
    # A size the policy does not launch is not: the context is what the run sends, not what the policy wants.
    resources, context, skip = role_vars(launch=launch | {"instance_type": "p5.48xlarge"})
    batches = simulation.requests(POLICY, resources, context, skip, REGION, ACCOUNT)
    (launching,) = [b for b in batches if b[0] == "LaunchG6eInstances"]
    instance = f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"
    assert not iampolicy.evaluate([POLICY], iampolicy.Request("ec2:RunInstances", instance, launching[3])).allowed


def test_without_a_launch_nothing_of_the_launch_is_asked():
    resources, context, skip = role_vars()
    batches = simulation.requests(POLICY, resources, context, skip, REGION, ACCOUNT)
    actions = {action for _, actions, *_ in batches for action in actions}
    assert "ec2:RunInstances" not in actions and "iam:PassRole" not in actions
    assert "elasticloadbalancing:CreateLoadBalancer" in actions and "cloudwatch:PutMetricAlarm" in actions


def test_context_entries_carry_their_types():
    entries = simulation.context_entries({"ec2:Encrypted": True, "aws:TagKeys": ["a", "b"], "ec2:InstanceType": "x"})
    assert entries == [
        {"ContextKeyName": "aws:TagKeys", "ContextKeyValues": ["a", "b"], "ContextKeyType": "stringList"},
        {"ContextKeyName": "ec2:Encrypted", "ContextKeyValues": ["true"], "ContextKeyType": "boolean"},
        {"ContextKeyName": "ec2:InstanceType", "ContextKeyValues": ["x"], "ContextKeyType": "string"},
    ]


GROUP = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/{FLEET}/*"
BALANCER = f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:loadbalancer/app/{FLEET}/*"


def test_a_denial_names_the_action_the_resource_why_and_the_kits_statement():
    batches = [
        ("ChangeOnlyTheFleetsLoadBalancerAndTargetGroup", ["elasticloadbalancing:RegisterTargets"], [BALANCER, GROUP],
         {"aws:ResourceTag/inference-kit:fleet": FLEET, "ec2:InstanceType": "g6e.xlarge"},
         ["aws:ResourceTag/inference-kit:fleet"]),
        ("ReadTheAccount", ["ec2:DescribeVpcs", "sts:GetCallerIdentity"], ["*"], {}, []),
    ]  # fmt: skip
    results = [
        [  # per resource (IAM's EvalResourceName at the top is the resource type's template then)
            {"EvalActionName": "elasticloadbalancing:RegisterTargets", "EvalResourceName": "arn:${Partition}:...",
             "EvalDecision": "implicitDeny", "ResourceSpecificResults": [
                 {"EvalResourceName": BALANCER, "EvalResourceDecision": "allowed"},
                 {"EvalResourceName": GROUP, "EvalResourceDecision": "implicitDeny",
                  "MissingContextValues": ["aws:ResourceTag/owner"]}]},
        ],
        [
            {"EvalActionName": "ec2:DescribeVpcs", "EvalResourceName": "*", "EvalDecision": "explicitDeny",
             "OrganizationsDecisionDetail": {"AllowedByOrganizations": False}},
            {"EvalActionName": "sts:GetCallerIdentity", "EvalResourceName": "*", "EvalDecision": "allowed"},
        ],
    ]  # fmt: skip
    denied = simulation.evaluate(batches, results)
    assert [(d["action"], d["resources"], d["decision"]) for d in denied] == [
        ("elasticloadbalancing:RegisterTargets", [GROUP], "implicitDeny"),
        ("ec2:DescribeVpcs", ["*"], "explicitDeny"),
    ]
    assert denied[0]["line"] == (
        f"elasticloadbalancing:RegisterTargets on {GROUP} (no policy of the principal allows it; the kit's statement"
        f" ChangeOnlyTheFleetsLoadBalancerAndTargetGroup; asked with aws:ResourceTag/inference-kit:fleet={FLEET};"
        " IAM lacked aws:ResourceTag/owner)"
    )
    assert denied[1]["line"] == (
        "ec2:DescribeVpcs on * (an explicit Deny in a service control policy of the organization;"
        " the kit's statement ReadTheAccount)"
    )


def test_an_older_answer_with_one_result_per_resource_is_read_too():
    batches = [("CreateTheTargetGroup", ["elasticloadbalancing:CreateTargetGroup"], [GROUP], {}, [])]
    results = [[{"EvalActionName": "elasticloadbalancing:CreateTargetGroup", "EvalResourceName": GROUP,
                 "EvalDecision": "implicitDeny"}]]  # fmt: skip
    (denial,) = simulation.evaluate(batches, results)
    assert denial["resources"] == [GROUP] and "no policy of" in denial["line"]


def test_one_line_per_action_lists_every_resource_denied_for_it():
    arns = [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*", f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/*"]
    batches = [("LaunchG6eInstances", ["ec2:RunInstances"], arns, {"ec2:InstanceType": "g6e.xlarge"},
                ["ec2:InstanceType"])]  # fmt: skip
    specific = [{"EvalResourceName": arn, "EvalResourceDecision": "implicitDeny"} for arn in arns]
    results = [[{"EvalActionName": "ec2:RunInstances", "EvalResourceName": "*", "EvalDecision": "implicitDeny",
                 "ResourceSpecificResults": specific}]]  # fmt: skip
    (denial,) = simulation.evaluate(batches, results)
    assert denial["line"].startswith(f"ec2:RunInstances on {arns[0]}, {arns[1]} (no policy")
    assert denial["line"].endswith("asked with ec2:InstanceType=g6e.xlarge)")
