"""Screenshots of the ZenML dashboard showing what our engines record, for docs/remote.md.

Starts a local ZenML server on 127.0.0.1 in a scratch config directory, runs the Dask demo
against it, opens the run in headless Chromium and saves two pictures:

    docs/img/dashboard-step-metadata.png    the `enrich` step's compute_engine metadata
    docs/img/dashboard-step-usage.png       the same, scrolled to its usage
    docs/img/dashboard-dataset-preview.png  the `enriched` dataset's schema + first rows
    docs/img/dashboard-dask-report.png      Dask's performance report of the `enrich` step

then stops the server and removes the scratch directory. Needs Debian's Chromium and the
Playwright driver (no browser download):

    apt-get install -y chromium && .venv/bin/pip install playwright
    .venv/bin/python examples/dashboard_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples._zenml_server import LocalZenMLServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# Headless, as root, on a machine without internet: no sandbox, no GPU, no background calls.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--headless=new", "--hide-scrollbars",
]


def _api(server: LocalZenMLServer, path: str, method: str = "GET", body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{server.url}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _skip_onboarding(server: LocalZenMLServer) -> None:
    """Answer the dashboard's first-visit survey for the local server's default user."""
    user = _api(server, "/current-user")
    _api(server, f"/users/{user['id']}/email-opt-in", "PUT", {"email_opted_in": False})
    _api(server, f"/users/{user['id']}", "PUT", {"user_metadata": {"finished_onboarding_survey": True}})


def _screenshots(server: LocalZenMLServer, run_id: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    run_page = f"{server.url}/projects/default/runs/{run_id}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})

        page.goto(run_page, wait_until="networkidle")
        page.get_by_text("enrich", exact=True).first.click()
        page.get_by_role("tab", name="Metadata").last.click()
        page.get_by_text("compute_engine", exact=True).click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "dashboard-step-metadata.png"), animations="disabled", timeout=60_000)
        usage = page.get_by_text("usage", exact=True).first
        usage.click()
        usage.evaluate("element => element.scrollIntoView({block: 'start'})")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "dashboard-step-usage.png"), animations="disabled", timeout=60_000)

        page.goto(run_page, wait_until="networkidle")
        page.get_by_text("enriched", exact=True).first.click()
        page.get_by_role("tab", name="Visualization").last.click()
        page.get_by_role("button", name="Load Preview").click()
        page.wait_for_timeout(2500)
        page.screenshot(path=str(out / "dashboard-dataset-preview.png"), animations="disabled", timeout=60_000)

        page.goto(run_page, wait_until="networkidle")
        page.get_by_text("enrich::dask_performance_report").first.click()
        page.get_by_role("tab", name="Visualization").last.click()
        page.get_by_role("button", name="Load Preview").click()
        page.wait_for_timeout(6000)  # the report draws its charts with its inline BokehJS
        page.screenshot(path=str(out / "dashboard-dask-report.png"), animations="disabled", timeout=60_000)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    scratch = Path(tempfile.mkdtemp(prefix="zenml-dashboard-"))
    server = LocalZenMLServer.start(scratch / "config")
    print(f"ZenML server at {server.url} (dashboard and REST API)")
    try:
        _skip_onboarding(server)
        demo = subprocess.run([sys.executable, "examples/dask_demo.py"], cwd=ROOT, env=server.env)
        if demo.returncode != 0:
            print("the Dask demo failed against the server", file=sys.stderr)
            return 1
        run = _api(server, "/runs?sort_by=desc:created&size=1&pipeline_name=dask_demo")["items"][0]
        _screenshots(server, run["id"], args.out)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for name in ("dashboard-step-metadata.png", "dashboard-step-usage.png", "dashboard-dataset-preview.png",
                 "dashboard-dask-report.png"):
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
