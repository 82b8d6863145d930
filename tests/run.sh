#!/usr/bin/env bash
# The whole test suite: lint, then the real roles on real systemd test hosts with the real
# vLLM (CPU build) serving tiny models made here, the AWS side against a local AWS API, and
# day-2 operations under load. Installs what it needs on a fresh machine.
# Extra arguments go to pytest, e.g.
#   tests/run.sh -k preflight
#   tests/run.sh tests/test_2_serve.py
# The files run one after another on one machine's cores: lanes of files side by side (KIT_LANE,
# each on its own test hosts) took longer on two cores, as every lane starts CPU engines.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
python tests/testhosts.py image >/dev/null
python tests/testhosts.py wheelhouse >/dev/null
python tests/kit.py models >/dev/null

for arg in "$@"; do
    [[ $arg == tests/* ]] && exec pytest "$@"
done
exec pytest -p no:cacheprovider tests/ "$@"
