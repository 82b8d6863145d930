"""What the unit tier's tests share: the kit's Python files loaded as modules, real nvidia-smi output."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NVIDIA_SMI = REPO / "tests" / "fixtures" / "nvidia-smi"  # real nvidia-smi output, see each README


def load(relative: str):
    """The Python file REPO/RELATIVE as a module (filter plugins and scripts are not packages; some
    installed programs, such as the readiness probe, have no .py suffix)."""
    path = REPO / relative
    loader = importlib.machinery.SourceFileLoader(path.stem.replace("-", "_"), str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def nvidia_smi(fixture: str, name: str) -> str:
    """The file NAME of the real nvidia-smi output FIXTURE (a directory of tests/fixtures/nvidia-smi)."""
    return (NVIDIA_SMI / fixture / name).read_text()
