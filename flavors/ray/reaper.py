"""Reap an owned Ray's processes when the pipeline process dies without stopping it.

Ray starts its raylet and GCS with a parent-death signal, so they die with us even on
SIGKILL. The raylet's children, the dashboard agent and the runtime-env agent, notice it
within a second but then spend about a minute trying to report it to the dead GCS before
they exit (measured with Ray 2.40 to 2.60). A small watcher process ends them: while we
run it notes the owned Ray's processes, and when its stdin reaches end-of-file (we died,
or stopped the engine) it kills those still alive. The owned Ray's processes are the Ray
processes our `ray.init` started as our direct children (GCS, raylet, monitors) and
everything below them; a Ray cluster this process started otherwise (`ray start --head`
in a child process) is not ours to kill. It runs in a session of its own, so a Ctrl-C in
the terminal reaches us, not it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Optional

_WATCHER = r"""
import os, sys, threading, psutil

owner = psutil.Process(int(sys.argv[1]))
since = float(sys.argv[2]) - 1.0  # process start times are rounded
ended = threading.Event()
threading.Thread(target=lambda: (sys.stdin.buffer.read(), ended.set()), daemon=True).start()
seen = {}


def is_ray(process):
    name = process.name()
    return name in ("raylet", "gcs_server") or name.startswith("ray::") or "/ray/" in " ".join(process.cmdline())


while True:
    try:
        children = owner.children()
    except psutil.Error:
        children = []
    for child in children:
        try:
            if child.pid == os.getpid() or not is_ray(child) or child.create_time() < since:
                continue
            for process in [child, *child.children(recursive=True)]:
                if is_ray(process):
                    seen[process.pid] = process.create_time()
        except psutil.Error:
            pass
    if ended.wait(0.5) or not children and not owner.is_running():
        break

alive = []
for pid, created in seen.items():
    try:
        process = psutil.Process(pid)
        if process.create_time() == created:
            process.kill()
            alive.append(process)
    except psutil.Error:
        pass
psutil.wait_procs(alive, timeout=5)
"""

_watcher: Optional[subprocess.Popen] = None


def watch(owner_pid: int, since: float) -> None:
    """Start the watcher for the Ray this process owns (one per process, like Ray's driver),
    whose start began at `since` (time.time())."""
    global _watcher
    release()
    _watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(owner_pid), repr(since)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def release(timeout: float = 10.0) -> None:
    """After `ray.shutdown()`: let the watcher kill what is left and wait for it to exit."""
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is None:
        return
    try:
        watcher.stdin.close()  # type: ignore[union-attr]
        watcher.wait(timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        watcher.kill()
        watcher.wait()
