#!/usr/bin/env bash
# The whole test suite: lint, then the real roles on a real systemd test host with the real
# vLLM (CPU build) serving tiny models made here. Installs what it needs on a fresh machine.
# Extra arguments go to pytest, e.g. tests/run.sh -k preflight
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
python tests/testhosts.py image >/dev/null
python tests/testhosts.py wheelhouse >/dev/null
exec pytest tests "$@"
