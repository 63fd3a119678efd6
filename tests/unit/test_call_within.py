"""`zenml_compute_engines.flavors.engine._call_within`, which bounds every engine start: what happens to a call
that outlives its deadline (the start it runs cannot be interrupted)."""

import threading

import pytest

from zenml_compute_engines.flavors.engine import _call_within, _DeadlinePassed


def test_a_result_in_time_is_returned_and_not_handed_on():
    late = []
    assert _call_within(5, "t", lambda: 42, on_late_result=late.append) == 42
    assert late == []


def test_an_error_in_time_is_raised_in_the_callers_thread():
    def fail():
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        _call_within(5, "t", fail)


def test_a_result_after_the_deadline_goes_to_on_late_result_on_the_call_thread():
    release, handed = threading.Event(), []

    def slow():
        release.wait(10)
        return "engine"

    with pytest.raises(_DeadlinePassed) as passed:
        _call_within(0.1, "t", slow, on_late_result=lambda r: handed.append((r, threading.current_thread())))
    release.set()
    passed.value.thread.join(10)
    assert handed == [("engine", passed.value.thread)]


def test_an_error_after_the_deadline_is_dropped():
    release, handed = threading.Event(), []

    def slow_failure():
        release.wait(10)
        raise RuntimeError("too late to matter")

    with pytest.raises(_DeadlinePassed) as passed:
        _call_within(0.1, "t", slow_failure, on_late_result=handed.append)
    release.set()
    passed.value.thread.join(10)
    assert not passed.value.thread.is_alive() and handed == []


def test_where_python_starts_no_thread_the_call_runs_on_the_callers_thread(monkeypatch):
    def refuse(self):  # what Python 3.12+ does in an atexit handler
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert _call_within(5, "t", threading.current_thread) is threading.current_thread()
