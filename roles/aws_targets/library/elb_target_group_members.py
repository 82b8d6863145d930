#!/usr/bin/python
# Copyright (c) the inference-kit authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: elb_target_group_members
short_description: Register and deregister targets of a target group, draining ones included
description:
  - Registers each target of O(register) that the target group does not route to (not
    registered, or C(draining) from an earlier deregistration), and deregisters each target of
    O(deregister) that is registered and not draining already.
  - Whether RegisterTargets on a draining instance target cancels the drain is not documented
    by AWS (for IP targets it documents the opposite: wait for the deregistration delay). Both
    are handled: a target still C(draining) after RegisterTargets is waited for until its drain
    ends (up to O(draining_timeout) seconds) and registered again.
  - Written because C(community.aws.elb_target) (10.0.0) registers a target only when its reason
    is C(Target.NotRegistered): a target deregistered less than the deregistration delay ago
    stays out, with C(changed=false).
options:
  name:
    description: Target group name.
    type: str
    required: true
  register:
    description: Targets to be in the group, as C(<instance id>:<port>).
    type: list
    elements: str
    default: []
  deregister:
    description: Targets to leave the group, as C(<instance id>:<port>).
    type: list
    elements: str
    default: []
  draining_timeout:
    description:
      - Seconds to wait for the drain of a target that RegisterTargets left C(draining) to end,
        before registering it again; the module fails after that. At least the group's
        deregistration delay, which bounds every drain.
    type: int
    default: 0
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

RETURN = r"""
registered:
  description: The targets registered, each with the state it had before.
  type: list
  elements: dict
  returned: always
  sample: [{"target": "i-0123456789abcdef0:8000", "was": "draining"}]
deregistered:
  description: The targets deregistered, each with the state it had before.
  type: list
  elements: dict
  returned: always
waited_for_drain:
  description: The targets RegisterTargets left draining, registered again once their drain ended.
  type: list
  elements: str
  returned: always
"""

import contextlib
import time

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore


def registered(health):
    """Registered, whether or not routed to: every state but draining, and unused only for a
    stopped instance (Target.InvalidState) or a group no load balancer uses (Target.NotInUse)."""
    state, reason = health
    return state != "draining" and not (state == "unused" and reason == "Target.NotRegistered")


def parse(module, targets):
    parsed = []
    for target in targets:
        instance, _, port = target.rpartition(":")
        if not instance or not port.isdigit():
            module.fail_json(msg=f'"{target}" is not a target: write it as <instance id>:<port>.')
        parsed.append({"Id": instance, "Port": int(port)})
    return parsed


def states(client, group_arn, targets):
    """'<id>:<port>' -> (state, reason) for TARGETS (unused/Target.NotRegistered when absent)."""
    if not targets:
        return {}
    found = client.describe_target_health(TargetGroupArn=group_arn, Targets=targets, aws_retry=True)
    return {
        f"{d['Target']['Id']}:{d['Target']['Port']}": (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
        for d in found["TargetHealthDescriptions"]
    }


def register_through_drain(module, client, group_arn, targets, timeout, poll=5):
    """RegisterTargets; then each target still draining (RegisterTargets did not cancel its drain)
    is registered again once its drain has ended. Returns those targets as "<id>:<port>"."""
    client.register_targets(TargetGroupArn=group_arn, Targets=targets, aws_retry=True)
    found = states(client, group_arn, targets)
    draining = [t for t in targets if found[f"{t['Id']}:{t['Port']}"][0] == "draining"]
    waited, deadline = [f"{t['Id']}:{t['Port']}" for t in draining], time.monotonic() + timeout
    while draining:
        if time.monotonic() >= deadline:
            module.fail_json(
                msg=f"{', '.join(waited)} still draining {timeout} s after RegisterTargets: the load balancer neither "
                "cancelled the drain nor ended it within the deregistration delay. Run again once it has ended."
            )
        time.sleep(poll)
        found = states(client, group_arn, draining)
        ended = [t for t in draining if found[f"{t['Id']}:{t['Port']}"][0] != "draining"]
        if ended:  # not registered any more: RegisterTargets registers them now
            client.register_targets(TargetGroupArn=group_arn, Targets=ended, aws_retry=True)
        draining = [t for t in draining if t not in ended]
    return waited


def main():
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "register": {"type": "list", "elements": "str", "default": []},
            "deregister": {"type": "list", "elements": "str", "default": []},
            "draining_timeout": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    client = module.client("elbv2", retry_decorator=AWSRetry.jittered_backoff())
    name = module.params["name"]
    try:
        group = client.describe_target_groups(Names=[name], aws_retry=True)["TargetGroups"][0]
    except is_boto3_error_code("TargetGroupNotFound"):
        module.fail_json(msg=f"There is no target group {name} in {module.region}: create it with playbooks/aws.yml.")
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:  # pylint: disable=duplicate-except
        module.fail_json_aws(e, msg=f"Could not read target group {name}")

    wanted, leaving = parse(module, module.params["register"]), parse(module, module.params["deregister"])
    overlap = {f"{t['Id']}:{t['Port']}" for t in wanted} & {f"{t['Id']}:{t['Port']}" for t in leaving}
    if overlap:
        module.fail_json(msg=f"Targets both to register and to deregister: {', '.join(sorted(overlap))}.")
    try:
        before = states(client, group["TargetGroupArn"], wanted + leaving)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Could not read the targets of {name}")

    def key(target):
        return f"{target['Id']}:{target['Port']}"

    to_register = [t for t in wanted if not registered(before[key(t)])]
    to_deregister = [t for t in leaving if registered(before[key(t)])]
    result = {
        "changed": bool(to_register or to_deregister),
        "registered": [{"target": key(t), "was": before[key(t)][0]} for t in to_register],
        "deregistered": [{"target": key(t), "was": before[key(t)][0]} for t in to_deregister],
        "waited_for_drain": [],
    }
    if module.check_mode:
        module.exit_json(**result)
    try:
        if to_deregister:
            client.deregister_targets(TargetGroupArn=group["TargetGroupArn"], Targets=to_deregister, aws_retry=True)
        if to_register:
            result["waited_for_drain"] = register_through_drain(
                module, client, group["TargetGroupArn"], to_register, module.params["draining_timeout"]
            )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        module.fail_json_aws(e, msg=f"Could not change the targets of {name}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
