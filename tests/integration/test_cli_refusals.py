"""The CLI refuses what it cannot mean: an unknown flow id is a usage error (2), and so is a
message that is not JSON, unless --string says it is plain text."""

from __future__ import annotations

import sqlite3
import time

from tests.integration.conftest import Grid


def test_unknown_flow_id_is_a_usage_error(grid: Grid) -> None:
    for args in (("inspect", "nosuchflow"), ("cancel", "nosuchflow"), ("logs", "nosuchflow"),
                 ("send", "nosuchflow", "1")):
        done = grid.cli(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and "nosuchflow" in done.stderr and done.stderr.count("\n") == 1


def _messages(grid: Grid) -> int:
    with sqlite3.connect(grid.paths.db) as db:
        count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    db.close()
    return count


def test_send_refuses_malformed_json_and_sends_text_with_string(grid: Grid) -> None:
    script = grid.write("echo.flow", """
        if __name__ == "__flow__":
            print(json.encode(fctx().actions.receive()))
    """)
    flow_id = grid.start(script)
    deadline = time.monotonic() + 15
    while not grid.client.get_flow(flow_id)["journal"]:
        assert time.monotonic() < deadline, "the flow never reached its receive"
        time.sleep(0.05)
    before = _messages(grid)
    refused = grid.cli("send", flow_id, "{bad")
    assert refused.returncode == 2, refused.stderr
    assert "not valid JSON" in refused.stderr and "--string" in refused.stderr and refused.stderr.count("\n") == 1
    assert _messages(grid) == before, "a malformed message was delivered"

    sent = grid.cli("send", "--string", flow_id, "{bad")
    assert sent.returncode == 0, sent.stderr
    assert grid.wait(flow_id)["status"] == "completed"
    assert grid.logs(flow_id) == ['"{bad"']
