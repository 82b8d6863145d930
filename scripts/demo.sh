#!/usr/bin/env bash
# The kit's main job on the embedded default, on this machine: a fresh systemd test host
# (a podman container), site.yml converging it into a vLLM server (the real CPU build, serving
# a tiny vision model made here) behind the authenticating gateway, then the three example
# clients and the health check against it.
#   scripts/demo.sh          set up everything and run the demo
#   scripts/demo.sh down     remove the demo host
set -euo pipefail
case "${1:-}" in
    "" | down) ;;
    -h | --help) sed -n '2,7s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: scripts/demo.sh [down]   (unknown argument: $1)" >&2; exit 2 ;;
esac
(($# <= 1)) || { echo "usage: scripts/demo.sh [down]" >&2; exit 2; }
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
eval "$(python tests/testhosts.py env)"

if [[ ${1:-} == down ]]; then
    python tests/kit.py down
    echo "demo host removed"
    exit 0
fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Preparing the test host, the tiny models and the keys (first run: several minutes)"
secrets=$(python tests/kit.py prepare)

step "ansible-playbook site.yml (inventory/local: one host, CPU build, tiny vision model)"
ansible-playbook site.yml -e "@$secrets"

OPENAI_BASE_URL=http://127.0.0.1:18000/v1
OPENAI_API_KEY=$(python tests/kit.py client-key)
export OPENAI_BASE_URL OPENAI_API_KEY
image=$(python tests/kit.py image "${KIT_SCRATCH:-/var/tmp/inference-kit}/red.png")

step "examples/chat.py"
examples/chat.py "Write a haiku about GPUs." --max-tokens 24 -v
step "examples/stream.py"
examples/stream.py "Count to ten." --max-tokens 24 -v
step "examples/vision.py --image $image"
examples/vision.py --image "$image" "What is in this picture?" --max-tokens 24 -v
step "scripts/health_check.py --depth vision --ready"
scripts/health_check.py --base-url http://127.0.0.1:18000 --depth vision --ready

cat <<DONE

The gateway answers on $OPENAI_BASE_URL (the tiny model's words are random: it is untrained).
Try it:  OPENAI_BASE_URL=$OPENAI_BASE_URL OPENAI_API_KEY=\$(.venv/bin/python tests/kit.py client-key) .venv/bin/python examples/chat.py "Hi"
Remove the demo host:  scripts/demo.sh down
DONE
