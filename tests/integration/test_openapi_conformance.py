"""The Client API keeps its OpenAPI document: schemathesis, with every check, against a real grid.

Each operation is fed generated valid and invalid input; every answer must carry a documented
status, content type and schema ({error, message} for every error), no 5xx, invalid input must be
refused, and 405s must name the path's methods. The run is bounded (a few examples per operation
and a fixed seed), so it stays well under a minute on a quiet machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Grid

pytest.importorskip("schemathesis", reason="schemathesis is in the test extras: pip install '.[test]'")

CONFIG = """
request-timeout = 30

# A long poll would hold every example for up to 60 s: ask for the events at once.
[[operations]]
include-name = "GET /v1/events"
parameters = { wait = 0 }

# What the schema cannot say: a bundle is a zip archive whose content matches its digest, and a
# hook's name, signature secret and match rule are checked by the API. A request valid by the
# schema alone may be refused for those reasons (400 or 422, never a 5xx, and still documented).
[[operations]]
include-name = "PUT /v1/bundles/{digest}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

[[operations]]
include-name = "PUT /v1/hooks/{name}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]

# A schedule's cron expression and time zone are checked by the API, as a hook's rules are.
[[operations]]
include-name = "PUT /v1/schedules/{name}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]
"""


@pytest.mark.timeout(300)
def test_schemathesis_finds_no_failure(grid: Grid, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
         "--no-color", "--config-file", str(config), "run", f"{grid.url}/openapi.json", "--checks", "all",
         "--max-examples", "5", "--seed", "20261202", "--workers", "2"],
        capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
