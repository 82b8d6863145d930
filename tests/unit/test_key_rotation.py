"""The plan of a client-key rotation (inference_api_keys): what is written and what is tried."""

from __future__ import annotations

import pytest
from kitcode import load

rotation = load("roles/inference_api_keys/filter_plugins/inference_api_keys.py")
plan = rotation.inference_api_keys_plan

ALICE, BOB, NEW = "alice-key-0123456789", "bob-key-0123456789ab", "new-key-0123456789abc"
KEYS = [{"name": "alice", "key": ALICE}, {"name": "bob", "key": BOB}]


def test_add_gives_the_client_a_second_key_and_tries_all():
    added = plan(KEYS, "alice", "add", NEW, "2026-11-29T02:00:00Z")
    assert added["entries"] == [*KEYS[:1], {"name": "alice", "key": NEW, "added": "2026-11-29T02:00:00Z"}, KEYS[1]]
    assert [(c["name"], c["status"]) for c in added["checks"]] == [("alice", 200), ("alice", 200), ("bob", 200)]
    assert (added["added"], added["new_keys"], added["error"]) == (["alice"], {"alice": NEW}, "")


def test_add_without_a_key_generates_one():
    assert len(plan(KEYS, "alice", "add")["new_keys"]["alice"]) >= 32


def test_retire_keeps_the_newest_key_whatever_the_order_in_the_file():
    two = [{"name": "alice", "key": NEW, "added": "2026-11-29T02:00:00Z"}, *KEYS]  # the new key first
    retired = plan(two, "alice", "retire")
    assert retired["entries"] == [two[0], KEYS[1]]
    assert {"name": "alice", "key": ALICE, "status": 401} in retired["checks"]


@pytest.mark.parametrize(
    ("keys", "phase"),
    [([KEYS[0], {"name": "alice", "key": NEW}, KEYS[1]], "add"), (KEYS, "retire")],
    ids=["add again", "retire again"],
)
def test_a_phase_that_ran_changes_nothing(keys, phase):
    again = plan(keys, "alice", phase, NEW if phase == "add" else "")
    assert again["entries"] == keys and again["added"] == again["retiring"] == [] and not again["error"]


@pytest.mark.parametrize(
    ("client", "new_key", "error"),
    [
        ("carol", "", "No client named carol in vault_inference_gateway_api_keys; clients: alice, bob."),
        ("all", NEW, "-e new_key=... goes with one client only"),
        ("alice", BOB.upper(), "The new key is already in use"),
    ],
)
def test_impossible_plans_say_why_and_hold_no_key(client, new_key, error):
    impossible = plan(KEYS, client, "add", new_key)
    assert impossible["error"].startswith(error) and impossible["entries"] == []
    assert ALICE not in impossible["error"] and BOB not in impossible["error"]


def test_mismatches_name_the_port_and_client_never_the_key():
    tried = [
        {"__inference_api_keys_try": [8000, {"name": "alice", "key": ALICE, "status": 200}], "status": 200},
        {"__inference_api_keys_try": [8001, {"name": "alice", "key": ALICE, "status": 401}], "status": 200},
    ]
    assert rotation.inference_api_keys_mismatches(tried) == [
        "gateway port 8001 answered 200 to a retired key of alice (expected 401)"
    ]
