"""Which target states count as registered (elb_target_group_members registers the others)."""

from __future__ import annotations

import pytest
from kitcode import load

members = load("roles/aws_targets/library/elb_target_group_members.py")


@pytest.mark.parametrize(
    ("state", "reason", "registered"),
    [
        ("initial", "Elb.RegistrationInProgress", True),
        ("healthy", None, True),
        ("unhealthy", "Target.ResponseCodeMismatch", True),
        ("draining", "Target.DeregistrationInProgress", False),  # registered again (and after its drain if need be)
        ("unused", "Target.NotRegistered", False),
        ("unused", "Target.InvalidState", True),  # a stopped instance, still registered
        ("unused", "Target.NotInUse", True),  # a group no load balancer uses yet
    ],
)
def test_registered(state, reason, registered):
    assert members.registered((state, reason)) is registered
