#!/usr/bin/env bash
# The whole suite, as two pytest sessions. Once, a single session died of a segfault in a
# native (non-Python) thread during a Spark test that ran after the Ray tests; Ray's
# in-process driver is the one native runtime with threads of its own in the test process
# and keeps some after ray.shutdown(), so the Ray tests get a process of their own.
# Extra arguments go to both sessions (e.g. -m "not slow").
set -u
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
ray_tests=tests/integration/test_ray_engine.py

# The BigQuery emulator lives in a venv of its own (.venv-bqemu), created once here.
"$python" -c "from examples._bqemulator import ensure_venv; ensure_venv()" || exit 1

"$python" -m pytest -q -ra --durations=25 --ignore="$ray_tests" "$@"
first=$?
"$python" -m pytest -q -ra --durations=10 "$ray_tests" "$@"
second=$?

for status in "$first" "$second"; do
    if [ "$status" -eq 5 ]; then
        echo "a pytest session collected no tests: the suite must never be empty" >&2
        exit 1
    fi
done
[ "$first" -eq 0 ] && [ "$second" -eq 0 ]
