"""A real Jupyter kernel (ipykernel, driven by nbclient as Jupyter runs a notebook), per
engine, with `reuse=process`: a run, a long run interrupted mid-job (the kernel interrupt
Jupyter's stop button sends), another run on the same engine, then the kernel's shutdown.

What must hold: the interrupted step's tasks stop within 10 s, the run after it starts its
work at once, the engine is the same one throughout, and once the kernel is shut down
nothing it started is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

from tests.faults.conftest import MARK, OWNED
from tests.faults.test_interrupts import CANCEL_LIMIT_S, ENGINES, _last_beat
from tests.support import zenml_env

CELLS = [
    "import json\nfrom tests.faults.fault_pipelines import long_job_pipeline, short_job_pipeline",
    # Two runs on the engine the first one starts.
    "first = short_job_pipeline(engine={engine!r}, beats={next!r})",
    # Interrupted mid-job by the test.
    "long_job_pipeline(engine={engine!r}, beats={beats!r})",
    "from zenml.client import Client\n"
    "interrupted = Client().get_pipeline('long_job_pipeline').last_run\n"
    "again = short_job_pipeline(engine={engine!r}, beats={next!r})\n"
    "facts = [run.steps['short_job'].run_metadata['compute_engine'] for run in (first, again)]\n"
    "print(json.dumps({{'job_s': again.steps['short_job'].outputs['output'][0].load(),\n"
    "                  'interrupted': str(interrupted.status),\n"
    "                  'starts': [f['engine_starts_in_process'] for f in facts]}}))",
]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_notebook_interrupted_mid_job_runs_again_at_once_and_leaves_nothing(zen, report, tmp_path, engine):
    import json

    import nbformat
    from nbclient import NotebookClient

    stack = zenml_env.register_engine_stack(engine, {**OWNED[engine], "reuse": "process"})
    beats = tmp_path / "beats"
    (beats / "next").mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(cell.format(engine=engine, beats=str(beats), next=str(beats / "next")))
        for cell in CELLS
    ]
    marker = uuid.uuid4().hex
    env = {**os.environ, MARK: marker, "ZENML_ACTIVE_STACK_ID": str(stack.id)}
    client = NotebookClient(notebook, timeout=600, allow_errors=True, resources={"metadata": {"path": zenml_env.ROOT_DIR}})
    sent = []

    def interrupt_when_the_long_job_runs() -> None:
        deadline = time.time() + 300
        while _last_beat(beats) == 0.0 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        sent.append(time.time())
        # What Jupyter's interrupt does on Linux: SIGINT to the kernel's process group,
        # which holds the engine processes the kernel started too.
        os.killpg(client.km.provisioner.pgid, signal.SIGINT)

    watcher = threading.Thread(target=interrupt_when_the_long_job_runs, daemon=True)
    watcher.start()
    client.execute(env=env)  # shuts the kernel down at the end, as closing the notebook does
    watcher.join(30)
    left = zenml_env.processes_marked(MARK, marker, settle_s=30)

    def text(cell):
        return "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in cell.outputs)

    assert sent, "the long job never started:\n" + text(notebook.cells[2])
    ran_on_s = _last_beat(beats) - sent[0]  # how long a task of the interrupted step still ran
    report("notebook-interrupt", engine, leaked=len(left), hung=ran_on_s >= CANCEL_LIMIT_S)
    assert ran_on_s < CANCEL_LIMIT_S, f"a task of the interrupted step still ran {ran_on_s:.0f}s after the interrupt"
    for number in (0, 1, 3):
        assert not [o for o in notebook.cells[number].outputs if o.output_type == "error"], text(notebook.cells[number])
    result = json.loads(text(notebook.cells[3]).strip().splitlines()[-1])
    assert result["interrupted"] in ("failed", "stopped"), result
    assert result["job_s"] < 60  # not behind the interrupted job's 400 one-second tasks
    assert result["starts"][0] == result["starts"][1]  # the same engine, kept across the runs
    assert left == [], zenml_env.describe(left)
