#!/usr/bin/env bash
# Install the oldest supported releases (tests/oldest.txt) into .venv-oldest, unless it holds
# them already. A venv cannot be moved into place: it is marked complete with a stamp of what
# it was installed from, and built anew when that changed. Called by tests/run_all.sh, and
# by .ci/run in the background while .venv installs (pip is single-threaded; 2 cores).
set -u
cd "$(dirname "$0")/.."
oldest=.venv-oldest
stamp="$(cat tests/oldest.txt pyproject.toml | sha256sum | cut -c1-16)"
[ "$(cat "$oldest/installed" 2>/dev/null)" = "$stamp" ] && exit 0
echo "Installing the oldest supported releases into $oldest (tests/oldest.txt)"
rm -rf "$oldest"
python3 -m venv "$oldest" \
    && "$oldest/bin/pip" install -q --upgrade pip \
    && "$oldest/bin/pip" install -q -c tests/oldest.txt -e '.[all,test]' \
    && echo "$stamp" > "$oldest/installed"
