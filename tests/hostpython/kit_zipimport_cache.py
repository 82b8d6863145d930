"""The test world's bytecode cache for modules imported from zip files.

Ansible runs each task's module from a zip of sources (AnsiballZ), and Python's zipimport compiles
every source in it on every task: about 0.13 s per task on a test host and 0.27 s per AWS module
call on the control node (measured). This caches the compiled code by the source's digest. It
changes no behaviour: a real host runs the same code, compiling it each time. Loaded on the test
hosts by a .pth file (testhosts.start_host; they share one cache directory) and on the control
node by tests/hostpython/sitecustomize.py (PYTHONPATH, tests/run.sh and kit.ansible_env).
Tracebacks of a cached module name the temporary path of its first run.
"""

import hashlib
import importlib.util
import marshal
import os
import zipimport

_CACHE = os.environ.get("KIT_ZIPIMPORT_CACHE", "/var/cache/kit-zipimport")
_compile = getattr(zipimport, "_compile_source", None)


def _cached(pathname, source):
    # The interpreter's bytecode version is part of the key: marshal's format changes between releases.
    path = os.path.join(_CACHE, hashlib.sha256(importlib.util.MAGIC_NUMBER + source).hexdigest())
    try:
        with open(path, "rb") as cached:
            return marshal.loads(cached.read())
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        os.makedirs(_CACHE, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as cached:
            cached.write(marshal.dumps(code))
        os.replace(partial, path)
    except OSError:
        pass  # a read-only or foreign cache: compile as zipimport does
    return code


if _compile is not None:
    zipimport._compile_source = _cached
