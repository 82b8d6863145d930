"""The test world's AnsiballZ cache, shared by the ansible-playbook runs of one suite run.

ansible-playbook builds each module's zip (AnsiballZ: the module and the module_utils it imports,
found by parsing their sources) once per run, in a cache under its own temporary directory that
it removes at exit: about 4 of a no-op site.yml's 21 CPU seconds (measured, py-spy). The suite
runs ansible-playbook a few hundred times with the same modules, so tests/run.sh points every run
at one directory (KIT_ANSIBALLZ_CACHE, fresh for each suite run and removed after it: ansible
keys the cache by module name, not content, so it must not outlive an edit of a module). The
zips are the ones ansible builds; a real run builds them itself, which only costs time.
Loaded on the control node by tests/hostpython/sitecustomize.py.
"""

import importlib.abc
import importlib.util
import os
import sys

_CACHE = os.environ.get("KIT_ANSIBALLZ_CACHE")
_MODULE = "ansible.executor.module_common"


class _Constants:
    """ansible.constants, but with the shared directory as the one module_common caches zips under."""

    def __init__(self, constants, local_tmp: str):
        self._constants, self.DEFAULT_LOCAL_TMP = constants, local_tmp

    def __getattr__(self, name):
        return getattr(self._constants, name)


class _PatchModuleCommon(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            os.makedirs(_CACHE, mode=0o700, exist_ok=True)
            module.C = _Constants(module.C, _CACHE)

        spec.loader.exec_module = exec_module
        return spec


if _CACHE:
    sys.meta_path.insert(0, _PatchModuleCommon())
