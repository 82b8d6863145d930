#!/usr/bin/env bash
# The whole test suite: lint, then the real roles on real systemd test hosts with the real
# vLLM (CPU build) serving tiny models made here, the AWS side against a local AWS API, and
# day-2 operations under load. Installs what it needs on a fresh machine.
# The test files run in lanes side by side, each lane on its own test hosts (KIT_LANE); the
# other lanes' output follows lane 1's. Extra arguments go to pytest in every lane, e.g.
#   tests/run.sh -k preflight
# and test files given as arguments run in one lane: tests/run.sh tests/test_2_serve.py
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
python tests/testhosts.py image >/dev/null
python tests/testhosts.py wheelhouse >/dev/null
python tests/kit.py models >/dev/null  # made once, before the lanes share them

for arg in "$@"; do
    [[ $arg == tests/* ]] && exec pytest "$@"
done

# Lanes, in minutes alone on 2 cores: 13, 14, 9 and 28 (day-2 operations under load); side by
# side 48, 53, 30 and 55. A lane's files share its host.
lanes=(
    "tests/test_0_static.py tests/test_1_preflight.py tests/test_2_serve.py"
    "tests/test_4_sglang.py tests/test_3_instance_store.py"
    "tests/test_5_aws.py"
    "tests/test_6_operations.py"
)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
for ((i = 1; i < ${#lanes[@]}; i++)); do
    # shellcheck disable=SC2086 # each lane is a list of files
    KIT_LANE=$((i + 1)) pytest -p no:cacheprovider --basetemp="$logs/tmp-$i" ${lanes[$i]} "$@" >"$logs/lane-$i.log" 2>&1 &
    pids+=($!)
done
status=0
echo "=================================== lane 1: ${lanes[0]}"
# shellcheck disable=SC2086
KIT_LANE=1 pytest -p no:cacheprovider --basetemp="$logs/tmp-0" ${lanes[0]} "$@" || status=$?
((status == 5)) && status=0  # 5: -k selected nothing in this lane
for ((i = 1; i < ${#lanes[@]}; i++)); do
    rc=0
    wait "${pids[$((i - 1))]}" || rc=$?
    echo "=================================== lane $((i + 1)): ${lanes[$i]} (exit $rc)"
    cat "$logs/lane-$i.log"
    ((rc == 0 || rc == 5)) || status=1
done
exit "$status"
