"""What a re-run has to apply. Each serving role's digest covers what decides its work on a host:
its settings' values (the options of its argument spec), the kit's code for it, and the digests of
the serving roles before it, whose results it builds on (the model the engine loads, the ports the
gateway proxies). roles/inference_manifest records the digests after each whole converge; a later
run skips the install and configure tasks of a role whose digest is unchanged and keeps its
service tasks, so a stopped unit still starts."""

import hashlib
import json
import os

import yaml

CONTRACT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # roles/inference
HOW_TO_RUN = {"inference_full_converge"}  # settings of the run itself, not of what it applies


def _tree(path):
    """Each file under PATH, by its path relative to PATH, as the sha256 of its content."""
    files = {}
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                files[os.path.relpath(full, path)] = hashlib.sha256(handle.read()).hexdigest()
    return files


def _options(role_path):
    with open(os.path.join(role_path, "meta", "argument_specs.yml"), encoding="utf-8") as handle:
        return set(yaml.safe_load(handle)["argument_specs"]["main"].get("options") or {})


def _role(role_path):
    return os.path.basename(os.path.normpath(role_path))


def inference_role_inputs(role_path, order):
    """The variables that decide the work of the serving role at ROLE_PATH: the options of its main
    entry point (meta/argument_specs.yml), the contract's, which every serving role uses, and the
    digests (<role>_digest) of the serving roles before it in ORDER."""
    before = [f"{role}_digest" for role in order[: order.index(_role(role_path))]]
    return sorted((_options(role_path) | _options(CONTRACT)) - HOW_TO_RUN) + before


def inference_files_fingerprint(path):
    """Each file under PATH (a directory on the control node) with its size and modification time:
    what rsync compares, so a changed model source changes the digest without hashing gigabytes."""
    found = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            stat = os.stat(os.path.join(root, name))
            found.append([os.path.relpath(os.path.join(root, name), path), stat.st_size, stat.st_mtime_ns])
    return found


def inference_settings_digest(values, role_path, code=()):
    """The digest of the serving role at ROLE_PATH: VALUES (of its inputs), its code, the
    contract's code and the code under each path in CODE."""
    trees = {path: _tree(path) for path in (role_path, CONTRACT, *code)}
    content = {"values": values, "code": [trees[path] for path in sorted(trees)]}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def inference_roles_to_apply(roles, wanted, recorded):
    """The ROLES whose WANTED digest (in the same order; empty when unknown) is unknown or differs
    from the one RECORDED."""
    return [role for role, digest in zip(roles, wanted, strict=True) if not digest or recorded.get(role) != digest]


class FilterModule:
    def filters(self):
        return {
            "inference_role_inputs": inference_role_inputs,
            "inference_files_fingerprint": inference_files_fingerprint,
            "inference_settings_digest": inference_settings_digest,
            "inference_roles_to_apply": inference_roles_to_apply,
        }
