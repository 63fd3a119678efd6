#!/usr/bin/env bash
# The whole suite on the newest releases, as two pytest sessions, then the fast set on the
# oldest releases we support (tests/oldest.txt, installed once into .venv-oldest, whose
# Spark is also the cluster of another release line the version-mismatch test needs).
# OLDEST_PASS=0 skips that pass (while iterating).
#
# Every session runs its tests in TEST_WORKERS (default 2) worker processes
# (pytest-xdist): most of a test's time is spent waiting on engines and pipeline processes,
# so two at once keep both cores busy. Each worker starts its own session fixtures
# (clusters, servers) on free loopback ports, and every leak check counts only the
# processes its own test started.
#
# Two sessions: once, a single session died of a segfault in a native (non-Python) thread
# during a Spark test that ran after the Ray tests; Ray's in-process driver is the one
# native runtime with threads of its own in the test process and keeps some after
# ray.shutdown(), so the Ray tests get processes of their own.
# Extra arguments go to every session (e.g. -m "not slow").
set -u
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
oldest=.venv-oldest
ray_tests=(tests/integration/test_ray_engine.py tests/integration/test_ray_usage.py)
ignore_ray=("${ray_tests[@]/#/--ignore=}")
parallel=(-n "${TEST_WORKERS:-2}" --dist worksteal)

# The BigQuery emulator lives in a venv of its own (.venv-bqemu), created once here.
"$python" -c "from examples._bqemulator import ensure_venv; ensure_venv()" || exit 1

# The oldest releases (.venv-oldest): their fast set below, and their Spark, the cluster of
# another release line the version-mismatch test needs.
bash tests/oldest_venv.sh || exit 1

# Each venv's Spark driver JVM records its class archive once, up front (both at once:
# two cores), so that no test's run pays for the recording (flavors/spark/class_cache.py).
"$python" -m zenml_compute_engines.flavors.spark.class_cache &
recording=$!
if [ "${OLDEST_PASS:-1}" = 1 ]; then "$oldest/bin/python" -m zenml_compute_engines.flavors.spark.class_cache; fi
wait "$recording"

spark_home() { "$1" -c "import os, pyspark; print(os.path.dirname(pyspark.__file__))"; }

statuses=()
run() {  # run <python> <pytest arguments...>
    "$@"
    statuses+=("$?")
}

# Each venv's tests see the other's Spark (a cluster of another release line).
export OTHER_SPARK_HOME="$(spark_home "$oldest/bin/python")"
run "$python" -m pytest -q -ra --durations=25 "${parallel[@]}" "${ignore_ray[@]}" "$@"
run "$python" -m pytest -q -ra --durations=10 "${parallel[@]}" "${ray_tests[@]}" "$@"

if [ "${OLDEST_PASS:-1}" = 1 ]; then
    echo "The fast set on the oldest supported releases ($oldest):"
    "$oldest/bin/python" -m pip list 2>/dev/null | grep -iE "^(zenml|pyspark|ray|dask|distributed) "
    export OTHER_SPARK_HOME="$(spark_home "$python")"
    run "$oldest/bin/python" -m pytest -q -ra --durations=10 "${parallel[@]}" -m "not slow" "${ignore_ray[@]}" "$@"
    run "$oldest/bin/python" -m pytest -q -ra "${parallel[@]}" -m "not slow" "${ray_tests[@]}" "$@"
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
