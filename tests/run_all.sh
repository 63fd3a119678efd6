#!/usr/bin/env bash
# The whole suite on the newest releases, as two pytest sessions. The oldest releases we
# support (tests/oldest.txt) are installed once into .venv-oldest: its Spark is the cluster
# of another release line the version-mismatch test needs. OLDEST_PASS=1 also runs the fast
# set there after the suite (not yet part of CI: see the README's "Supported versions").
#
# Two sessions: once, a single session died of a segfault in a native (non-Python) thread
# during a Spark test that ran after the Ray tests; Ray's in-process driver is the one
# native runtime with threads of its own in the test process and keeps some after
# ray.shutdown(), so the Ray tests get a process of their own.
# Extra arguments go to every session (e.g. -m "not slow").
set -u
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
oldest=.venv-oldest
ray_tests=tests/integration/test_ray_engine.py

# The BigQuery emulator lives in a venv of its own (.venv-bqemu), created once here.
"$python" -c "from examples._bqemulator import ensure_venv; ensure_venv()" || exit 1

if [ ! -e "$oldest/installed" ]; then  # a venv cannot be moved into place: mark it complete
    echo "Installing the oldest supported releases into $oldest (tests/oldest.txt)"
    rm -rf "$oldest"
    python3 -m venv "$oldest" \
        && "$oldest/bin/pip" install -q --upgrade pip \
        && "$oldest/bin/pip" install -q -c tests/oldest.txt -e '.[all,test]' \
        && touch "$oldest/installed" || exit 1
fi

spark_home() { "$1" -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))"; }

statuses=()
run() {  # run <python> <pytest arguments...>
    "$@"
    statuses+=("$?")
}

# Each venv's tests see the other's Spark (a cluster of another release line).
export OTHER_SPARK_HOME="$(spark_home "$oldest/bin/python")"
run "$python" -m pytest -q -ra --durations=25 --ignore="$ray_tests" "$@"
run "$python" -m pytest -q -ra --durations=10 "$ray_tests" "$@"

if [ "${OLDEST_PASS:-0}" = 1 ]; then
    echo "The fast set on the oldest supported releases ($oldest):"
    "$oldest/bin/python" -m pip list 2>/dev/null | grep -iE "^(zenml|pyspark|ray|dask|distributed) "
    export OTHER_SPARK_HOME="$(spark_home "$python")"
    run "$oldest/bin/python" -m pytest -q -ra --durations=10 -m "not slow" --ignore="$ray_tests" "$@"
    run "$oldest/bin/python" -m pytest -q -ra -m "not slow" "$ray_tests" "$@"
fi

failed=0
for status in "${statuses[@]}"; do
    if [ "$status" -eq 5 ]; then
        echo "a pytest session collected no tests: the suite must never be empty" >&2
        exit 1
    fi
    [ "$status" -eq 0 ] || failed=1
done
exit "$failed"
