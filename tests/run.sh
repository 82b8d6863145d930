#!/usr/bin/env bash
# The whole test suite: lint, then the real roles on real systemd test hosts with the real
# vLLM (CPU build) serving tiny models made here, the AWS side against a local AWS API, and
# day-2 operations under load. Installs what it needs on a fresh machine.
# Extra arguments go to pytest, e.g.
#   tests/run.sh -k preflight
#   tests/run.sh tests/test_2_serve.py
# Three lanes side by side, each on its own test hosts: the AWS tests (test host 2) and the
# day-2 tests (test hosts 5 and 6) beside all the others (test host 1). Measured on 2 cores:
# the host-1 and AWS tests each keep about one core busy (Ansible waits on its hosts and on the
# test AWS server), and in two lanes the host-1 lane ran on alone for its last 30-40 minutes.
# The other lanes' output follows the first's.
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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lanes=(aws day2)
declare -A files=([aws]=tests/test_5_aws.py [day2]=tests/test_6_operations.py)
declare -A host=([aws]=2 [day2]=1)  # test_6 names its own hosts, 5 and 6
declare -A pid
for lane in "${lanes[@]}"; do
    KIT_LANE=${host[$lane]} pytest -p no:cacheprovider --durations=10 --junitxml="$work/$lane.xml" \
        --basetemp="$work/$lane" "${files[$lane]}" "$@" >"$work/$lane.log" 2>&1 &
    pid[$lane]=$!
done
status=0
pytest -p no:cacheprovider --durations=10 --junitxml="$work/others.xml" --basetemp="$work/others" \
    --ignore="${files[aws]}" --ignore="${files[day2]}" tests/ "$@" || status=$?
((status == 5)) && status=0  # 5: -k selected nothing in that lane
for lane in "${lanes[@]}"; do
    rc=0
    wait "${pid[$lane]}" || rc=$?
    echo "=============================== ${files[$lane]} (exit $rc)"
    cat "$work/$lane.log"
    ((rc == 0 || rc == 5)) || status=1
done
echo "=============================== minutes per file (setup included; the lanes overlap)"
python tests/kit.py file-times "$work/others.xml" "$work/aws.xml" "$work/day2.xml"
exit "$status"
