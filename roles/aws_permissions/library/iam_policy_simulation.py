#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: iam_policy_simulation
short_description: Ask IAM whether the caller may make the calls a policy's Allow statements describe
description:
  - Turns each Allow statement of O(policy) (what a run needs, such as the kit's control-node
    policy) into the requests the run makes, its actions on its resources with the condition keys
    the run sends, and asks IAM (C(SimulatePrincipalPolicy)) for the decision on each, as the
    caller's user or role with every policy attached to it (and the organization's SCPs and the
    permissions boundary, which the simulator includes). Creates and changes nothing, so check
    mode runs it the same.
  - "The requests: each resource pattern of a statement becomes the O(resources) entry of that
    pattern (the run's own ARNs, such as C(loadbalancer/app/<fleet>/*)), or itself, with a region
    or account of C(*) made the run's. The context is O(context) (the values the run sends, such
    as C(aws:RequestTag/...)), less the keys the statement's C(Null: true) wants absent; a key the
    statement compares that O(context) lacks (C(elasticloadbalancing:CreateAction)) is asked once
    per value the statement lists."
  - The principal is the caller (STS C(GetCallerIdentity)); an assumed-role session becomes its
    role, whose ARN IAM gives with its path (C(GetRole)); or O(principal_arn).
  - When IAM cannot simulate (the caller may not call C(iam:SimulatePrincipalPolicy), an account's
    root user, a federated user, a role with a path the caller may not look up), the module warns,
    returns RV(simulated=false) with the reason, and fails nothing.
options:
  policy:
    description: The policy whose Allow statements describe the run's calls (its Deny statements are not requests).
    type: dict
    required: true
  resources:
    description: Resource pattern of O(policy) to the run's ARNs for it; a pattern not listed is asked as it is.
    type: dict
    default: {}
  context:
    description:
      - Condition key to the value the run sends (a string, a bool, or a list for a multivalued key).
      - aws:PrincipalArn, aws:PrincipalAccount and aws:RequestedRegion are added.
    type: dict
    default: {}
  skip:
    description: Sids of O(policy)'s statements the run does not use (not asked).
    type: list
    elements: str
    default: []
  principal_arn:
    description: The IAM user or role whose policies are simulated; empty for the caller's.
    type: str
    default: ""
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

RETURN = r"""
simulated:
  description: Whether IAM simulated the requests.
  type: bool
  returned: always
reason:
  description: Why IAM did not simulate (empty when it did).
  type: str
  returned: always
caller:
  description: The caller's ARN (GetCallerIdentity).
  type: str
  returned: always
principal_arn:
  description: The user or role simulated.
  type: str
  returned: always
requests:
  description: How many (action, resource) requests were asked.
  type: int
  returned: always
denied:
  description: The requests IAM did not allow, one entry per action and reason with its resources.
  type: list
  elements: dict
  returned: always
  sample:
    - action: elasticloadbalancing:CreateTargetGroup
      resources: [arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/inference/*]
      decision: implicitDeny
      statement: CreateTheTargetGroup
      context: {aws:RequestTag/inference-kit:fleet: inference}
      missing_context: []
      denied_by: ""
      line: "elasticloadbalancing:CreateTargetGroup on arn:...:targetgroup/inference/* (no policy of the principal ...)"
"""

import contextlib
import itertools
import json

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

# EvalDecision's values (IAM API Reference, EvaluationResult: allowed, explicitDeny, implicitDeny).
ALLOWED = "allowed"
NEGATED = ("Not", "NotEquals", "NotLike")


def listed(element):
    return element if isinstance(element, list) else [element]


def principal(arn):
    """The IAM user or role SimulatePrincipalPolicy takes for the caller ARN (its PolicySourceArn
    is "a user, group, or role"; IAM API Reference, SimulatePrincipalPolicy), as
    (arn, role name to look up or None, why not); an assumed-role session
    arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION (IAM User Guide, "IAM identifiers")
    becomes arn:PARTITION:iam::ACCOUNT:role/ROLE. The session ARN has no path, which the role's
    ARN has (arn:aws:iam::ACCOUNT:role/PATH/ROLE; terraform-provider-aws#19957): the caller looks
    the role up by name (GetRole) for it."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None, None, f"{arn} is not an ARN"
    partition, service, account, resource = parts[1], parts[2], parts[4], parts[5]
    if service == "iam" and resource.startswith(("user/", "role/")):
        return arn, None, ""
    if service == "sts" and resource.startswith("assumed-role/"):
        role = resource.split("/")[1]
        return f"arn:{partition}:iam::{account}:role/{role}", role, ""
    if service == "iam" and resource == "root":
        return None, None, "the caller is the account's root user, which IAM does not simulate (no policy limits it)"
    return None, None, f"IAM simulates users and roles only, and the caller is {arn}"


def fill(arn, region, account):
    """ARN with a region or account of "*" made REGION or ACCOUNT (an empty one stays empty: S3
    buckets, AMIs)."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return arn
    if parts[3] == "*":
        parts[3] = region
    if parts[4] == "*":
        parts[4] = account
    return ":".join(parts)


def _lookup(mapping, key):
    """MAPPING's value for KEY, whose name is case-insensitive (condition keys are)."""
    return next((value for name, value in mapping.items() if name.lower() == key.lower()), None)


def situations(statement, context):
    """The contexts the run asks STATEMENT's actions in: CONTEXT, without the keys a Null: true
    condition wants absent, once for each value of a key the statement compares and CONTEXT lacks
    (a key naming the situation, such as which create call tags)."""
    base = dict(context)
    choices = {}
    for operator, keys in (statement.get("Condition") or {}).items():
        name = operator.split(":")[-1]
        for key, values in keys.items():
            if name == "Null":
                if str(listed(values)[0]).lower() == "true":
                    base = {k: v for k, v in base.items() if k.lower() != key.lower()}
                continue
            if _lookup(base, key) is not None or name.endswith("IfExists") or any(n in name for n in NEGATED):
                continue
            plain = [str(v) for v in listed(values) if "${" not in str(v) and "*" not in str(v) and "?" not in str(v)]
            if plain:
                choices[key] = plain
    keys = sorted(choices)
    return [base | dict(zip(keys, chosen, strict=True)) for chosen in itertools.product(*(choices[k] for k in keys))]


def requests(policy, resources, context, skip, region, account):
    """The run's requests as batches, one SimulatePrincipalPolicy call each: (statement Sid,
    actions, resource ARNs, context, the condition keys the statement reads)."""
    found = []
    for index, statement in enumerate(listed(policy.get("Statement", []))):
        sid = statement.get("Sid", str(index))
        if statement.get("Effect") != "Allow" or sid in skip or "Action" not in statement:
            continue
        arns = []
        for pattern in listed(statement.get("Resource", "*")):
            for arn in listed(resources.get(pattern, pattern)):
                if fill(arn, region, account) not in arns:
                    arns.append(fill(arn, region, account))
        keys = sorted({key for keys in (statement.get("Condition") or {}).values() for key in keys})
        for situation in situations(statement, context):
            found.append((sid, sorted(listed(statement["Action"])), arns, situation, keys))
    return found


def context_entries(context):
    """CONTEXT as SimulatePrincipalPolicy's ContextEntries (ContextKeyType string, stringList or boolean)."""
    entries = []
    for key, value in sorted(context.items()):
        if isinstance(value, bool):
            entries.append({"ContextKeyName": key, "ContextKeyValues": [_text(value)], "ContextKeyType": "boolean"})
        elif isinstance(value, list):
            values = [str(v) for v in value]
            entries.append({"ContextKeyName": key, "ContextKeyValues": values, "ContextKeyType": "stringList"})
        else:
            entries.append({"ContextKeyName": key, "ContextKeyValues": [str(value)], "ContextKeyType": "string"})
    return entries


def decisions(result):
    """(resource, decision, missing context keys, what denied) for one EvaluationResult: per
    resource from ResourceSpecificResults where IAM gives them (the top-level EvalResourceName is
    the resource type's ARN template then; IAM API Reference, EvaluationResult), else the
    top-level decision."""
    denied_by = ""
    if result.get("OrganizationsDecisionDetail", {}).get("AllowedByOrganizations") is False:
        denied_by = "a service control policy of the organization"
    elif result.get("PermissionsBoundaryDecisionDetail", {}).get("AllowedByPermissionsBoundary") is False:
        denied_by = "the permissions boundary"
    specific = result.get("ResourceSpecificResults") or []
    if specific:
        return [
            (r["EvalResourceName"], r["EvalResourceDecision"], r.get("MissingContextValues") or [], denied_by)
            for r in specific
        ]
    resource = result.get("EvalResourceName", "*")
    return [(resource, result["EvalDecision"], result.get("MissingContextValues") or [], denied_by)]


def _text(value):
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def describe(denial):
    """One line for the denied requests of one action: what, on what, why."""
    if denial["decision"] == "explicitDeny":
        why = "an explicit Deny in " + (denial["denied_by"] or "a policy of the principal, an SCP or its boundary")
    elif denial["denied_by"]:
        why = f"{denial['denied_by']} does not allow it"
    else:
        why = "no policy of the principal allows it"
    shown = ", ".join(f"{k}={_text(v)}" for k, v in sorted(denial["context"].items()))
    parts = [why, f"the kit's statement {denial['statement']}"]
    if shown:
        parts.append(f"asked with {shown}")
    if denial["missing_context"]:
        parts.append("IAM lacked " + ", ".join(denial["missing_context"]))
    return f"{denial['action']} on {', '.join(denial['resources'])} ({'; '.join(parts)})"


def evaluate(batches, results_by_batch):
    """The denied requests of BATCHES, given each batch's EvaluationResults: one entry per action
    and reason, with every resource denied for it."""
    denied = {}
    for (sid, actions, arns, situation, keys), results in zip(batches, results_by_batch, strict=True):
        for result in results:
            if result["EvalActionName"] not in actions:
                continue
            for resource, decision, missing, denied_by in decisions(result):
                if decision == ALLOWED:
                    continue
                denial = {
                    "action": result["EvalActionName"],
                    "decision": decision,
                    "statement": sid,
                    "context": {k: v for k, v in situation.items() if k in keys},
                    "missing_context": missing,
                    "denied_by": denied_by,
                }
                entry = denied.setdefault(json.dumps(denial, sort_keys=True), denial | {"resources": []})
                for name in [resource] if resource in arns or arns == ["*"] else arns:
                    if name not in entry["resources"]:
                        entry["resources"].append(name)
    for denial in denied.values():
        denial["line"] = describe(denial)
    return list(denied.values())


def simulate(client, source, actions, arns, context):
    """Every EvaluationResult of one SimulatePrincipalPolicy call, over all its pages (IAM may
    return fewer than MaxItems with more to come: check IsTruncated after every call and send
    its Marker; IAM API Reference, SimulatePrincipalPolicy)."""
    arguments = {"PolicySourceArn": source, "ActionNames": actions, "ContextEntries": context_entries(context)}
    if arns != ["*"]:
        arguments["ResourceArns"] = arns
    results = []
    while True:
        page = client.simulate_principal_policy(aws_retry=True, **arguments)
        results.extend(page.get("EvaluationResults", []))
        if not page.get("IsTruncated"):
            return results
        arguments["Marker"] = page["Marker"]


def main():
    module = AnsibleAWSModule(
        argument_spec={
            "policy": {"type": "dict", "required": True},
            "resources": {"type": "dict", "default": {}},
            "context": {"type": "dict", "default": {}},
            "skip": {"type": "list", "elements": "str", "default": []},
            "principal_arn": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    retry = AWSRetry.jittered_backoff()
    sts, iam = module.client("sts", retry_decorator=retry), module.client("iam", retry_decorator=retry)
    result = {"changed": False, "simulated": False, "reason": "", "requests": 0, "denied": []}
    try:
        caller = sts.get_caller_identity(aws_retry=True)  # needs no permission (AWS STS API Reference)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg="Could not ask STS who the caller is")
    result["caller"] = caller["Arn"]
    source, role, reason = (
        (module.params["principal_arn"], None, "") if module.params["principal_arn"] else principal(caller["Arn"])
    )
    if role:
        try:
            source = iam.get_role(aws_retry=True, RoleName=role)["Role"]["Arn"]
        except is_boto3_error_code("AccessDenied"):
            pass  # right unless the role has a path: IAM then has no such role (NoSuchEntity below)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
            module.fail_json_aws(e, msg=f"Could not look up role {role}")
    result["principal_arn"] = source or ""
    if source:
        region = module.region
        account = source.split(":")[4] or caller["Account"]
        context = {
            "aws:PrincipalArn": source,
            "aws:PrincipalAccount": caller["Account"],
            "aws:RequestedRegion": region,
        } | module.params["context"]
        batches = requests(
            module.params["policy"], module.params["resources"], context, module.params["skip"], region, account
        )
        result["requests"] = sum(len(b[1]) * len(b[2]) for b in batches)
        try:
            found = [simulate(iam, source, actions, arns, situation) for _, actions, arns, situation, _ in batches]
        except is_boto3_error_code("AccessDenied"):
            reason = (
                f"{caller['Arn']} may not call iam:SimulatePrincipalPolicy on {source} (AccessDenied), so this run's"
                " calls were not checked before they are made"
            )
        except is_boto3_error_code("NoSuchEntity"):  # pylint: disable=duplicate-except
            reason = (
                f"IAM has no {source}: a role with a path (the session's ARN has none) that the caller may not look"
                " up (iam:GetRole); give its full ARN in aws_permissions_principal_arn"
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
            module.fail_json_aws(e, msg=f"IAM could not simulate the run's calls for {source}")
        else:
            result["simulated"] = True
            result["denied"] = evaluate(batches, found)
    result["reason"] = reason
    if not result["simulated"]:
        module.warn(f"IAM did not simulate this run's AWS calls: {reason}.")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
