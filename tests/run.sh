#!/usr/bin/env bash
# The whole test suite. Installs what it needs on a fresh machine, then runs three tiers:
#   unit   the kit's pure logic (tests/unit: filter plugins, module helpers, scripts), no host;
#   role   Molecule scenarios (molecule/<role>): one role converged on a fresh test host, again
#          (changed=0), and verified; `molecule test -s <role>` runs one;
#   hosts  the lint, the real roles on real systemd test hosts with the real vLLM (CPU build)
#          serving tiny models made here, the AWS side against a local AWS API, and day-2
#          operations under load.
# Extra arguments go to pytest, e.g.
#   tests/run.sh -k preflight
#   tests/run.sh tests/test_2_serve.py
# Two lanes side by side, each keeping about one of a 2-core machine's cores busy: the tests on test
# host 1, ending with the AWS registration on it; beside them the AWS tests that need no host, the
# day-2 tests (test hosts 5 and 6) and the lint. The second lane starts with the AWS tests while
# the first lane's host image, wheels and models are prepared; its output follows the first's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

prepare() {  # the test hosts' image (debootstrap, beside the downloads), the vLLM wheels, the tiny models
    python tests/testhosts.py image >/dev/null &
    local image_pid=$!
    python tests/testhosts.py wheelhouse >/dev/null
    python tests/kit.py models >/dev/null
    wait "$image_pid"
}

for arg in "$@"; do
    if [[ $arg == tests/* ]]; then
        prepare
        exec pytest "$@"
    fi
done

unit_status=0
SECONDS=0
pytest -p no:cacheprovider tests/unit "$@" || unit_status=$?
unit_seconds=$SECONDS
((unit_status == 0 || unit_status == 5)) || exit 1  # 5: -k selected nothing here

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The lanes meet there: the AWS policy test compares the policy with what both lanes' AWS tests called.
export KIT_RUN_DIR="$work"
second=(tests/test_5_aws.py tests/test_6_operations.py tests/test_0_static.py)
pytest -p no:cacheprovider --durations=10 --junitxml="$work/second.xml" --basetemp="$work/second" "${second[@]}" "$@" \
    >"$work/second.log" 2>&1 &
second_pid=$!
trap 'kill "$second_pid" 2>/dev/null || true; rm -rf "$work"' EXIT  # a failed setup stops the second lane too
SECONDS=0
prepare
setup_seconds=$SECONDS
if [[ " $* " != *" -k "* ]]; then
    # The day-2 fleet's image (engine installed) builds beside the first tests; the fleet waits for it.
    python tests/testhosts.py engine-image >"$work/engine-image.log" 2>&1 &
fi
role_status=0
role_seconds=0
if [[ " $* " != *" -k "* ]]; then
    SECONDS_BEFORE_ROLES=$SECONDS
    molecule test --all || role_status=$?
    role_seconds=$((SECONDS - SECONDS_BEFORE_ROLES))
fi
status=0
ignored=(--ignore=tests/unit)
for file in "${second[@]}"; do ignored+=(--ignore="$file"); done
pytest -p no:cacheprovider --durations=10 --junitxml="$work/first.xml" --basetemp="$work/first" "${ignored[@]}" \
    tests/ "$@" || status=$?
second_status=0
wait "$second_pid" || second_status=$?
echo "=============================== ${second[*]} (exit $second_status)"
cat "$work/second.log"
echo "=============================== minutes per file (setup included; the two lanes overlap)"
python tests/kit.py file-times "$work/first.xml" "$work/second.xml"
echo "=============================== time per tier: unit ${unit_seconds} s, role ${role_seconds} s," \
    "hosts $((SECONDS / 60)) min (of which ${setup_seconds} s preparing the first lane's host image, wheels and" \
    "models, and the role tier's ${role_seconds} s in the first lane)"
for rc in "$role_status" "$status" "$second_status"; do
    ((rc == 0 || rc == 5)) || exit 1  # 5: -k selected nothing in that lane
done
