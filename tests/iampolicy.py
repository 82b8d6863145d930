"""IAM's evaluation of identity-based policies, for the test AWS server (tests/awsmock.py).

No maintained PyPI library evaluates IAM policies with their conditions for a request (pmapper's
local check was last released in 2022; iam-ape computes permission sets, not requests;
aws-why ships a binary; @cloud-copilot/iam-simulate is npm). This follows AWS's documentation:

- Policy evaluation logic (docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
  an explicit Deny in any statement wins; else an Allow that matches; else denied (implicitly).
  A statement matches when its Action (or NotAction), Resource (or NotResource) and every
  Condition match.
- Action matching is case-insensitive, with * and ? wildcards (reference_policies_elements_action.html).
- Resource matching (reference_policies_elements_resource.html) and ArnLike/ArnEquals
  (reference_policies_elements_condition_operators.html#Conditions_ARN): case-sensitive, each
  of the six colon-separated parts of the ARN matched on its own, * and ? within a part.
- Condition operators (reference_policies_elements_condition_operators.html): several operators
  in a Condition, and several keys under one operator, must all match (AND); several values for
  one key match when any matches (OR). A key absent from the request matches no positive
  operator, and matches a negated one (StringNotEquals, StringNotLike, ArnNotLike, ...); the
  ...IfExists form matches when the key is absent; Null tests presence.
- Multivalued keys (reference_policies_condition-single-vs-multi-valued-context-keys.html):
  ForAllValues matches when every value in the request matches (and when the key is absent or
  empty); ForAnyValue when at least one does (never when absent).
- Policy variables (reference_policies_variables.html): ${key} in Resource and in condition
  values of string and ARN operators is the request's value of key; ${key, 'default'} its
  default; ${*}, ${?} and ${$} the literal characters. A variable whose key is absent makes
  that Resource or value match nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

Value = str | list[str]


@dataclass
class Request:
    """One authorization question: may the caller do ACTION on RESOURCE, with CONTEXT's keys."""

    action: str
    resource: str = "*"
    context: dict[str, Value] = field(default_factory=dict)

    def value(self, key: str) -> Value | None:
        """The request's value of KEY; condition key names are case-insensitive."""
        wanted = key.lower()
        for name, value in self.context.items():
            if name.lower() == wanted:
                return value
        return None


@dataclass
class Decision:
    allowed: bool
    reason: str  # "allowed", "explicit deny", "implicit deny"
    statement: str | None = None  # the Sid (or index) that decided


class Unresolved(Exception):
    """A policy variable whose key the request lacks."""


_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def substitute(text: str, request: Request) -> str:
    def one(match: re.Match) -> str:
        inner = match.group(1).strip()
        if inner in ("*", "?", "$"):
            return inner
        key, _, default = inner.partition(",")
        value = request.value(key.strip())
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if value is None:
            default = default.strip()
            if default.startswith("'") and default.endswith("'") and len(default) >= 2:
                return default[1:-1]
            raise Unresolved(key)
        return value

    return _VARIABLE.sub(one, text)


def _wildcard(pattern: str, text: str, case_sensitive: bool = True) -> bool:
    # IAM's wildcards are * and ? only (no [...] classes).
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, 0 if case_sensitive else re.IGNORECASE | re.DOTALL) is not None


def action_matches(pattern: str, action: str) -> bool:
    return _wildcard(pattern, action, case_sensitive=False)


def arn_matches(pattern: str, arn: str) -> bool:
    if pattern == "*":
        return True
    wanted, given = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) != 6 or len(given) != 6:
        return False
    return all(_wildcard(w, g) for w, g in zip(wanted, given, strict=True))


def _listed(element) -> list:
    return element if isinstance(element, list) else [element]


def _resource_matches(statement: dict, request: Request) -> bool:
    def any_match(patterns) -> bool:
        for pattern in _listed(patterns):
            try:
                if arn_matches(substitute(pattern, request), request.resource):
                    return True
            except Unresolved:
                continue
        return False

    if "Resource" in statement:
        return any_match(statement["Resource"])
    if "NotResource" in statement:
        return not any_match(statement["NotResource"])
    return False


def _action_matches(statement: dict, action: str) -> bool:
    if "Action" in statement:
        return any(action_matches(p, action) for p in _listed(statement["Action"]))
    if "NotAction" in statement:
        return not any(action_matches(p, action) for p in _listed(statement["NotAction"]))
    return False


def _number(text: str) -> float:
    return float(text)


# operator (without IfExists) -> (compare one request value with one policy value, negated, variables apply)
_OPERATORS = {
    "StringEquals": (lambda v, p: v == p, False, True),
    "StringNotEquals": (lambda v, p: v == p, True, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False, True),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True, True),
    "StringLike": (lambda v, p: _wildcard(p, v), False, True),
    "StringNotLike": (lambda v, p: _wildcard(p, v), True, True),
    "ArnEquals": (lambda v, p: arn_matches(p, v), False, True),
    "ArnLike": (lambda v, p: arn_matches(p, v), False, True),
    "ArnNotEquals": (lambda v, p: arn_matches(p, v), True, True),
    "ArnNotLike": (lambda v, p: arn_matches(p, v), True, True),
    "NumericEquals": (lambda v, p: _number(v) == _number(p), False, False),
    "NumericNotEquals": (lambda v, p: _number(v) == _number(p), True, False),
    "NumericLessThan": (lambda v, p: _number(v) < _number(p), False, False),
    "NumericLessThanEquals": (lambda v, p: _number(v) <= _number(p), False, False),
    "NumericGreaterThan": (lambda v, p: _number(v) > _number(p), False, False),
    "NumericGreaterThanEquals": (lambda v, p: _number(v) >= _number(p), False, False),
    "Bool": (lambda v, p: v.lower() == p.lower(), False, False),
}


def _condition_matches(operator: str, key: str, policy_values, request: Request) -> bool:
    qualifier = None
    if ":" in operator:
        qualifier, operator = operator.split(":", 1)
        if qualifier not in ("ForAllValues", "ForAnyValue"):
            raise ValueError(f"unknown condition qualifier {qualifier}")
    value = request.value(key)
    present = value is not None and value != []
    values = [str(v) for v in _listed(policy_values)]
    if operator == "Null":
        return (not present) == (values[0].lower() == "true")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if operator not in _OPERATORS:
        raise ValueError(f"unknown condition operator {operator}")
    compare, negated, variables = _OPERATORS[operator]
    resolved = []
    for policy_value in values:
        try:
            resolved.append(substitute(policy_value, request) if variables else policy_value)
        except Unresolved:
            continue

    def matches_one(given: str) -> bool:
        hit = any(compare(given, p) for p in resolved)
        return not hit if negated else hit

    given = [str(v) for v in _listed(value)] if present else []
    if qualifier == "ForAllValues":
        return all(matches_one(v) for v in given)
    if qualifier == "ForAnyValue":
        return any(matches_one(v) for v in given)
    if not present:
        return if_exists or negated
    if negated:
        return all(matches_one(v) for v in given)
    return any(matches_one(v) for v in given)


def statement_matches(statement: dict, request: Request) -> bool:
    if not _action_matches(statement, request.action) or not _resource_matches(statement, request):
        return False
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, policy_values in keys.items():
            if not _condition_matches(operator, key, policy_values, request):
                return False
    return True


def evaluate(policies: list[dict], request: Request) -> Decision:
    """AWS's decision for REQUEST under identity-based POLICIES of one account (no SCP, boundary
    or resource policy)."""
    allowed_by = None
    for policy in policies:
        for index, statement in enumerate(_listed(policy.get("Statement", []))):
            if not statement_matches(statement, request):
                continue
            name = statement.get("Sid", str(index))
            if statement.get("Effect") == "Deny":
                return Decision(False, "explicit deny", name)
            if statement.get("Effect") == "Allow" and allowed_by is None:
                allowed_by = name
    if allowed_by is not None:
        return Decision(True, "allowed", allowed_by)
    return Decision(False, "implicit deny")
