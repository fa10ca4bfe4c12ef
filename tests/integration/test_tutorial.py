"""The tutorial's finished flow, run with the commands the tutorial gives, on a real grid: the
retry fails three times against a missing file, then a run fetches, waits for the approval sent
with `flowmetal send`, and reports through a workspace command."""

from __future__ import annotations

import re
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LoopbackServer
from tests.integration.conftest import Grid

pytestmark = pytest.mark.timeout(180)
TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _final_flow() -> str:
    blocks = re.findall(r"^```python\n(# file: main\.flow\n.*?)^```", TUTORIAL.read_text(), re.MULTILINE | re.DOTALL)
    assert blocks, "the tutorial has no main.flow"
    return str(blocks[-1])


def test_the_tutorial_runs_as_written(grid: Grid) -> None:
    site = grid.project / "site"
    site.mkdir()
    (site / "stock.bak").write_text('{"items": ["apples", "pears"]}')
    server = LoopbackServer(partial(_QuietFiles, directory=str(site)))  # python3 -m http.server, in-process
    try:
        script = grid.write("main.flow", _final_flow())
        url = f"url={server.url}/stock.json"
        assert grid.cli("check", "main.flow").returncode == 0

        # Section 3: the file is missing, so every attempt fails and so does the root flow.
        failed = grid.cli("run", "--arg", url, str(script), timeout=120)
        assert failed.returncode == 1, failed.stderr
        assert "answered 404" in failed.stderr
        attempts = [f for f in grid.client.list_flows() if f["flow"] == "fetch"]
        assert [f["status"] for f in attempts] == ["failed"] * 3

        # Sections 4 and 5: the file is back; the flow waits for the approval, then reports.
        (site / "stock.bak").rename(site / "stock.json")
        started = grid.cli("run", "--detach", "--arg", url, str(script))
        assert started.returncode == 0, started.stderr
        flow_id = started.stdout.strip()
        deadline = time.monotonic() + 60
        while f"waiting for approval: flowmetal send --string {flow_id} yes" not in grid.logs(flow_id):
            assert time.monotonic() < deadline, grid.logs(flow_id)
            time.sleep(0.1)
        sent = grid.cli("send", "--string", flow_id, "yes")
        assert sent.returncode == 0, sent.stderr
        assert grid.wait(flow_id, timeout=60)["status"] == "completed"
        assert grid.logs(flow_id)[-1] == "2 items: apples, pears"
    finally:
        server.close()
