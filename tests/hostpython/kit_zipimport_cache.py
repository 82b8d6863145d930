"""The test world's bytecode cache for modules imported from zip files.

Ansible runs each task's module from a zip of sources (AnsiballZ), and Python's zipimport compiles
every source in it on every task: about 0.15 s of CPU per task on a test host and 0.3 s per AWS
module call on the control node, a fifth of the suite's CPU. This caches the compiled code by the
source's digest. It changes no behaviour: a real host runs the same code, compiling it each time.
Loaded on the test hosts by a .pth file (testhosts.start_host) and on the control node by
tests/hostpython/sitecustomize.py (PYTHONPATH, tests/run.sh and kit.ansible_env). Tracebacks of a
cached module name the temporary path of its first run.
"""

import hashlib
import marshal
import os
import zipimport

_CACHE = os.environ.get("KIT_ZIPIMPORT_CACHE", "/var/cache/kit-zipimport")
_compile = getattr(zipimport, "_compile_source", None)


def _cached(pathname, source):
    path = os.path.join(_CACHE, hashlib.sha256(source).hexdigest())
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
