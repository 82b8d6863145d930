"""The test AWS server's IAM policy evaluator (tests/iampolicy.py) against AWS's documented examples
(IAM User Guide: policy evaluation logic, condition operators, multivalued context keys, policy
variables; the page of each example is named beside it)."""

from __future__ import annotations

import sys

import pytest
from kitcode import REPO

sys.path.insert(0, str(REPO / "tests"))
import iampolicy as iam  # noqa: E402 - the test server's module, beside the tests, not a package

Request = iam.Request


def decide(statements: list[dict], action: str, resource: str = "*") -> iam.Decision:
    policy = {"Version": "2012-10-17", "Statement": statements}
    return iam.evaluate([policy], Request(action, resource, {}))


def allowed(statements, action, resource="*", context=None) -> bool:
    policy = {"Version": "2012-10-17", "Statement": statements}
    return iam.evaluate([policy], Request(action, resource, context or {})).allowed


def test_evaluation_explicit_deny_wins_then_allow_then_implicit_deny():
    """reference_policies_evaluation-logic.html: a Deny in any statement overrides every Allow."""
    statements = [
        {"Sid": "All", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Sid": "NoDelete", "Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"},
    ]
    assert decide(statements, "s3:GetObject").allowed
    denied = decide(statements, "s3:DeleteBucket")
    assert (denied.allowed, denied.reason, denied.statement) == (False, "explicit deny", "NoDelete")
    assert decide(statements, "ec2:RunInstances").reason == "implicit deny"


def test_actions_match_case_insensitively_with_wildcards():
    """reference_policies_elements_action.html: "iam:*AccessKey*"; action names are case-insensitive."""
    statements = [{"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": "*"}]
    assert allowed(statements, "iam:CreateAccessKey") and allowed(statements, "IAM:listaccesskeys")
    assert not allowed(statements, "iam:CreateUser")


def test_not_action_and_not_resource():
    """reference_policies_elements_notaction.html: allow everything but IAM; NotResource: deny
    outside one bucket."""
    statements = [
        {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
        {
            "Effect": "Deny",
            "Action": "s3:*",
            "NotResource": ["arn:aws:s3:::HRBucket/Payroll", "arn:aws:s3:::HRBucket/Payroll/*"],
        },
    ]
    assert not allowed(statements, "iam:CreateUser")
    assert allowed(statements, "s3:GetObject", "arn:aws:s3:::HRBucket/Payroll/june.csv")
    assert not allowed(statements, "s3:GetObject", "arn:aws:s3:::HRBucket/Other/file")
    assert allowed(statements, "ec2:DescribeInstances")


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("arn:aws:iam::123456789012:role/inference-kit-hosts", True),
        ("arn:aws:iam::123456789012:role/other", False),
        ("arn:aws:iam::123456789012:role/path/inference-kit-hosts", False),
        ("arn:aws:ec2:us-east-1:123456789012:instance/i-1", False),
    ],
)
def test_resources_match_per_arn_part(resource, expected):
    """reference_policies_elements_resource.html: wildcards within an ARN's parts, case-sensitive."""
    statements = [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::*:role/inference-kit-*"}]
    assert allowed(statements, "iam:PassRole", resource) is expected
    assert not allowed(statements, "iam:PassRole", resource.upper())


def test_policy_variables_in_resource_and_conditions():
    """reference_policies_variables.html: "arn:aws:iam::*:user/${aws:username}"; an absent key
    matches nothing unless the variable has a default."""
    statements = [{"Effect": "Allow", "Action": "iam:*AccessKey*", "Resource": "arn:aws:iam::*:user/${aws:username}"}]
    arn = "arn:aws:iam::123456789012:user/Bob"
    assert allowed(statements, "iam:CreateAccessKey", arn, {"aws:username": "Bob"})
    assert not allowed(statements, "iam:CreateAccessKey", arn, {"aws:username": "Alice"})
    assert not allowed(statements, "iam:CreateAccessKey", arn, {})
    defaulted = [
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {"StringEquals": {"s3:ExistingObjectTag/team": "${aws:PrincipalTag/team, 'company-wide'}"}},
        }
    ]
    assert allowed(defaulted, "s3:GetObject", "*", {"s3:ExistingObjectTag/team": "company-wide"})
    owner = [
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "arn:aws:ec2:*::image/*",
            "Condition": {"StringEquals": {"ec2:Owner": ["amazon", "${aws:PrincipalAccount}"]}},
        }
    ]
    image = "arn:aws:ec2:us-east-1::image/ami-1"
    assert allowed(owner, "ec2:RunInstances", image, {"ec2:Owner": "amazon", "aws:PrincipalAccount": "111122223333"})
    assert allowed(
        owner, "ec2:RunInstances", image, {"ec2:Owner": "111122223333", "aws:PrincipalAccount": "111122223333"}
    )
    assert not allowed(
        owner, "ec2:RunInstances", image, {"ec2:Owner": "444455556666", "aws:PrincipalAccount": "111122223333"}
    )


def test_string_equals_several_values_are_or_several_keys_are_and():
    """reference_policies_multi-value-conditions.html: values of one key OR, keys AND."""
    statements = [
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/env": ["dev", "test"], "ec2:InstanceType": "g6e.xlarge"}},
        }
    ]
    assert allowed(
        statements, "ec2:RunInstances", context={"aws:RequestTag/env": "test", "ec2:InstanceType": "g6e.xlarge"}
    )
    assert not allowed(
        statements, "ec2:RunInstances", context={"aws:RequestTag/env": "prod", "ec2:InstanceType": "g6e.xlarge"}
    )
    assert not allowed(statements, "ec2:RunInstances", context={"aws:RequestTag/env": "dev"})


def test_string_like_wildcards_and_case():
    """reference_policies_elements_condition_operators.html (String): StringLike is case-sensitive with * and ?."""
    statements = [
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "*",
            "Condition": {"StringLike": {"ec2:InstanceType": "g6e.*"}},
        }
    ]
    assert allowed(statements, "ec2:RunInstances", context={"ec2:InstanceType": "g6e.12xlarge"})
    assert not allowed(statements, "ec2:RunInstances", context={"ec2:InstanceType": "G6E.xlarge"})
    assert not allowed(statements, "ec2:RunInstances", context={"ec2:InstanceType": "p5.48xlarge"})
    assert not allowed(statements, "ec2:RunInstances", context={})


def test_absent_keys_fail_positive_operators_and_pass_negated_ones():
    """reference_policies_elements_condition_operators.html: a key absent from the request does not
    match, and a negated operator (StringNotEquals, ArnNotLike) then matches; ...IfExists matches."""

    def one(operator):
        return [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "*",
                "Condition": {operator: {"aws:SourceVpce": "vpce-1a2b3c4d"}},
            }
        ]

    assert not allowed(one("StringEquals"), "s3:GetObject")
    assert allowed(one("StringNotEquals"), "s3:GetObject")
    assert allowed(one("StringEqualsIfExists"), "s3:GetObject")
    assert not allowed(one("StringEqualsIfExists"), "s3:GetObject", context={"aws:SourceVpce": "vpce-other"})
    assert not allowed(one("StringNotEquals"), "s3:GetObject", context={"aws:SourceVpce": "vpce-1a2b3c4d"})


def test_null_tests_whether_the_key_is_present():
    """reference_policies_elements_condition_operators.html (Null): "aws:TokenIssueTime": "true"
    matches requests with long-term credentials (no key); "false" requires the key."""
    temporary = [
        {"Effect": "Allow", "Action": "ec2:*", "Resource": "*", "Condition": {"Null": {"aws:TokenIssueTime": "true"}}}
    ]
    assert allowed(temporary, "ec2:DescribeInstances")
    assert not allowed(temporary, "ec2:DescribeInstances", context={"aws:TokenIssueTime": "2026-01-01T00:00:00Z"})
    tagged = [
        {
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": "*",
            "Condition": {"Null": {"aws:RequestTag/inference-kit:fleet": "false"}},
        }
    ]
    assert allowed(tagged, "ec2:RunInstances", context={"aws:RequestTag/inference-kit:fleet": "a"})
    assert not allowed(tagged, "ec2:RunInstances", context={"aws:RequestTag/Name": "a"})


def test_bool_and_arn_operators():
    """reference_policies_elements_condition_operators.html: Bool aws:SecureTransport; ArnLike aws:SourceArn."""
    secure = [
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    ]
    assert not allowed(secure, "s3:GetObject", context={"aws:SecureTransport": "false"})
    assert allowed(secure, "s3:GetObject", context={"aws:SecureTransport": "true"})
    arn = [
        {
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": "*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:sns:*:123456789012:*-alarms"}},
        }
    ]
    assert allowed(arn, "sqs:SendMessage", context={"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:x-alarms"})
    assert not allowed(arn, "sqs:SendMessage", context={"aws:SourceArn": "arn:aws:sns:us-east-1:210987654321:x-alarms"})
    assert not allowed(arn, "sqs:SendMessage", context={"aws:SourceArn": "arn:aws:sns:us-east-1:123456789012:x-topic"})


def test_for_all_values_and_for_any_value():
    """reference_policies_condition-single-vs-multi-valued-context-keys.html: ForAllValues with
    aws:TagKeys allows only the listed keys and matches a request with no tags; ForAnyValue needs one."""
    only = [
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}},
        }
    ]
    assert allowed(only, "ec2:CreateTags", context={"aws:TagKeys": ["environment"]})
    assert allowed(only, "ec2:CreateTags", context={"aws:TagKeys": ["environment", "cost-center"]})
    assert not allowed(only, "ec2:CreateTags", context={"aws:TagKeys": ["environment", "owner"]})
    assert allowed(only, "ec2:CreateTags", context={})
    one = [
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["environment", "cost-center"]}},
        }
    ]
    assert allowed(one, "ec2:CreateTags", context={"aws:TagKeys": ["owner", "cost-center"]})
    assert not allowed(one, "ec2:CreateTags", context={"aws:TagKeys": ["owner"]})
    assert not allowed(one, "ec2:CreateTags", context={})
    none_of = [
        {
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": "*",
            "Condition": {"ForAllValues:StringNotEquals": {"aws:TagKeys": ["inference-kit:fleet"]}},
        }
    ]
    assert allowed(none_of, "ec2:CreateTags", context={"aws:TagKeys": ["Team"]})
    assert not allowed(none_of, "ec2:CreateTags", context={"aws:TagKeys": ["Team", "inference-kit:fleet"]})


def test_condition_key_names_are_case_insensitive():
    """reference_policies_elements_condition.html: condition key names are not case-sensitive."""
    statements = [
        {
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": "*",
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        }
    ]
    assert allowed(statements, "iam:PassRole", context={"IAM:passedtoservice": "ec2.amazonaws.com"})
    assert not allowed(statements, "iam:PassRole", context={"iam:PassedToService": "lambda.amazonaws.com"})
