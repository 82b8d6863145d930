"""Session fixtures: one fresh systemd test host, fresh keys, the tiny models."""

from __future__ import annotations

import pytest

import kit


@pytest.fixture(scope="session")
def models():
    return kit.models()


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    path = tmp_path_factory.mktemp("secrets") / "secrets.json"
    values = kit.write_secrets(path)
    values["file"] = path
    return values


@pytest.fixture(scope="session")
def host(models):
    """A fresh test host for the whole session; the tests run in file order against it."""
    kit.start_host()
    yield kit.HOST
    kit.testhosts.remove_host(kit.HOST)


def secret_values(keys) -> list[str]:
    return [keys["vault_inference_engine_internal_key"]] + [c["key"] for c in keys["vault_inference_gateway_api_keys"]]


def pytest_terminal_summary(terminalreporter):
    """The client load of every day-2 test: requests sent, completed and failed."""
    import traffic

    if kit.REPORT:
        terminalreporter.section("measured")
        for line in kit.REPORT:
            terminalreporter.write_line(line)
    if traffic.REPORT:
        terminalreporter.section("client load during day-2 operations")
        for test, label, stats in traffic.REPORT:
            terminalreporter.write_line(f"{test} [{label}]: {stats}")
