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
# Two lanes side by side, each keeping about one of a 2-core machine's cores busy: most role
# scenarios (test host 7), then the tests on test host 1, ending with the AWS registration on it;
# beside them the AWS tests that need no host, the sglang_server and inference_metrics scenarios
# (test host 8) and the day-2 tests (test hosts 5 and 6). The lint and
# the second lane's AWS tests run while the first lane builds the host image; its scenarios that
# need only that image run while the wheels, models and CUDA compiler download. The lint's and the
# second lane's output follows the first lane's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# Modules the role scenarios run on the control node compile their sources once, as the tests' do
# (tests/hostpython/kit_zipimport_cache.py).
export PYTHONPATH="$PWD/tests/hostpython" KIT_ZIPIMPORT_CACHE="${KIT_SCRATCH:-/var/tmp/inference-kit}/zipimport-cache"

downloads() {  # the vLLM wheels, the tiny models made with them, CUDA 13.0's compiler
    python tests/testhosts.py cuda-toolkit >/dev/null &
    local toolkit_pid=$!
    python tests/testhosts.py wheelhouse >/dev/null
    python tests/kit.py models >/dev/null
    wait "$toolkit_pid"
}

prepare() {  # the test hosts' image (mmdebstrap), beside the downloads
    python tests/testhosts.py image >/dev/null &
    local image_pid=$!
    downloads
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
# Every ansible-playbook run of this suite run shares the modules' zips (tests/hostpython/kit_ansiballz_cache.py).
export KIT_ANSIBALLZ_CACHE="$work/ansiballz-cache"
second=(tests/test_5_aws.py tests/test_6_operations.py)
second_roles=(sglang_server inference_metrics)  # on test host 8; the first lane runs the others
# The first lane's scenarios that need the host image only run while the downloads go on; those
# that copy the model or start from the image with vLLM installed wait for them.
first_roles=() image_roles=()
for scenario in molecule/*/molecule.yml; do
    name=$(basename "$(dirname "$scenario")")
    [[ " ${second_roles[*]} " != *" $name "* ]] || continue
    if grep -Eq 'KIT_ROLE_HOST_OPTIONS:.*\b(model|engine-installed)\b' "$scenario"; then
        first_roles+=("$name")
    else
        image_roles+=("$name")
    fi
done
with_roles=true
[[ " $* " != *" -k "* ]] || with_roles=false  # -k selects tests, not role scenarios

roles() {  # role scenarios $2..., on test host $1; prints their seconds on fd 3
    local host=$1 status=0 start=$SECONDS
    shift
    if $with_roles; then
        for scenario in "$@"; do
            local scenario_start=$SECONDS
            KIT_ROLE_HOST=$host molecule test -s "$scenario" || status=1
            echo "=============================== molecule $scenario: $((SECONDS - scenario_start)) s"
        done
    fi
    echo "$((SECONDS - start))" >&3
    return "$status"
}

second_lane() {  # the AWS tests (no host), its role scenarios once the first lane has prepared, the day-2 tests
    local status=0
    pytest -p no:cacheprovider --durations=0 --durations-min=10 --junitxml="$work/second-aws.xml" --basetemp="$work/second-aws" \
        "${second[0]}" "$@" || status=$?
    ((status == 0 || status == 5)) || status=1
    roles 8 "${second_roles[@]}" 3>"$work/second-roles.seconds" || status=1
    local rest=0
    pytest -p no:cacheprovider --durations=0 --durations-min=10 --junitxml="$work/second.xml" --basetemp="$work/second" \
        "${second[@]:1}" "$@" || rest=$?
    ((rest == 0 || rest == 5)) || status=1
    return "$status"
}
second_lane "$@" >"$work/second.log" 2>&1 &
second_pid=$!
trap 'kill "$second_pid" 2>/dev/null || true; rm -rf "$work"' EXIT  # a failed setup stops the second lane too
SECONDS=0
# The lint needs no host: it runs while the downloads and the image build wait on the network.
pytest -p no:cacheprovider --durations=0 --durations-min=10 --junitxml="$work/static.xml" --basetemp="$work/static" \
    tests/test_0_static.py "$@" >"$work/static.log" 2>&1 &
static_pid=$!
downloads >"$work/downloads.log" 2>&1 &
downloads_pid=$!
trap 'kill "$second_pid" "$downloads_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
python tests/testhosts.py image >/dev/null
setup_seconds=$SECONDS
if $with_roles; then
    # The day-2 fleet's image (engine installed) builds once the wheels are in (it waits for them),
    # beside the first scenarios and tests; the fleet and the vllm_server scenario wait for it.
    python tests/testhosts.py engine-image >"$work/engine-image.log" 2>&1 &
fi
role_status=0
roles 7 "${image_roles[@]}" 3>"$work/image-roles.seconds" || role_status=$?
wait_start=$SECONDS
if ! wait "$downloads_pid"; then
    cat "$work/downloads.log"
    exit 1
fi
setup_seconds=$((setup_seconds + SECONDS - wait_start))
roles 7 "${first_roles[@]}" 3>"$work/first-roles.seconds" || role_status=$?
status=0
ignored=(--ignore=tests/unit --ignore=tests/test_0_static.py)
for file in "${second[@]}"; do ignored+=(--ignore="$file"); done
pytest -p no:cacheprovider --durations=0 --durations-min=10 --junitxml="$work/first.xml" --basetemp="$work/first" "${ignored[@]}" \
    tests/ "$@" || status=$?
static_status=0
wait "$static_pid" || static_status=$?
echo "=============================== tests/test_0_static.py, beside the setup (exit $static_status)"
cat "$work/static.log"
second_status=0
wait "$second_pid" || second_status=$?
echo "=============================== ${second[*]} (exit $second_status)"
cat "$work/second.log"
echo "=============================== minutes per file (setup included; the two lanes overlap)"
python tests/kit.py file-times "$work/static.xml" "$work/first.xml" "$work/second-aws.xml" "$work/second.xml"
first_roles_seconds=$(($(cat "$work/image-roles.seconds") + $(cat "$work/first-roles.seconds")))
first_roles=("${image_roles[@]}" "${first_roles[@]}")
second_roles_seconds=$(cat "$work/second-roles.seconds" 2>/dev/null || echo 0)
echo "=============================== time per tier: unit ${unit_seconds} s;" \
    "role $((first_roles_seconds + second_roles_seconds)) s (${first_roles[*]}: ${first_roles_seconds} s in the" \
    "first lane; ${second_roles[*]}: ${second_roles_seconds} s in the second);" \
    "hosts and roles $((SECONDS / 60)) min in two lanes (${setup_seconds} s of it preparing the host image, wheels and models)"
for rc in "$role_status" "$status" "$static_status" "$second_status"; do
    ((rc == 0 || rc == 5)) || exit 1  # 5: -k selected nothing in that lane
done
