#!/usr/bin/env bash
# The whole suite, as two pytest sessions. Ray's in-process driver leaves native threads
# behind after ray.shutdown(); once, a later (non-Ray) test crashed the pytest process
# with a segfault in such a thread, so the Ray tests get a process of their own.
# Extra arguments go to both sessions (e.g. -m "not slow").
set -u
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
ray_tests=tests/integration/test_ray_engine.py

"$python" -m pytest -q -ra --ignore="$ray_tests" "$@"
first=$?
"$python" -m pytest -q -ra "$ray_tests" "$@"
second=$?

for status in "$first" "$second"; do
    if [ "$status" -eq 5 ]; then
        echo "a pytest session collected no tests: the suite must never be empty" >&2
        exit 1
    fi
done
[ "$first" -eq 0 ] && [ "$second" -eq 0 ]
