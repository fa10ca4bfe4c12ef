"""The Flow DB and the in-memory grid answer the same requests with the same results and text.

One table of flows runs through both: the real Flow DB (``InProcessGrid``, no subprocesses) and
``MemoryGrid`` (what the runtime's unit tests use). Each flow's journal (every request's kind and
result, error text and traceback included) and each flow's end must be identical, up to the
spelling of flow ids, which differ by design (``f2`` in memory, 12 hex digits on the grid).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from grid_local.db.store import FlowStore
from grid_local.runtime.execution import Completed, Failed
from grid_local.runtime.memory import MemoryGrid
from grid_local.runtime.sources import PROJECT_FILE, DirectorySource
from tests.helpers import write_file
from tests.store.inprocess import InProcessGrid

pytestmark = pytest.mark.timeout(120)

CHILDREN = """
def _double_impl(fctx):
    return fctx.args.n * 2

double = flow(implementation = _double_impl)

def _boom_impl(fctx):
    fail("kaboom")

boom = flow(implementation = _boom_impl)

def _listen_impl(fctx):
    return fctx.actions.receive(check = False).value
"""

# name -> (the body of main.flow after the children above, what the root must print)
TABLE: dict[str, str] = {
    "run and wait a child": """
        t = fctx().actions.run(double, n = 21)
        print(fctx().actions.wait([t]))
    """,
    "a failing child, waited with check = False": """
        r = fctx().actions.wait([fctx().actions.run(boom)], check = False)
        print(r.ok, r.value[0].ok, r.value[0].error)
    """,
    "a failing child called directly fails the caller": """
        boom()
    """,
    "several children in the order given": """
        tasks = [fctx().actions.run(double, n = i) for i in range(3)] + [fctx().actions.run(boom)]
        for r in fctx().actions.wait(tasks, check = False).value:
            print(r.ok, r.value, r.error)
    """,
    "wait on something that is not a task": """
        r = fctx().actions.wait([{"flow_id": 7}, "nope"], check = False)
        print(r.value)
    """,
    "send to a flow that does not exist": """
        r = fctx().actions.send("nosuchflow", "hi", check = False)
        print(r.ok, r.error)
    """,
    "send to itself, then receive": """
        fctx().actions.send(fctx().flow_id, {"k": [1, 2]})
        fctx().actions.send(fctx().flow_id, "second", inbox = "other")
        print(fctx().actions.receive(inbox = "other"), fctx().actions.receive())
    """,
    "sleep zero seconds": """
        print(fctx().actions.sleep(0))
    """,
    "unwrap a failed child's result": """
        r = fctx().actions.wait([fctx().actions.run(boom)])
        unwrap(r[0])
    """,
}


def _project(root: Path, body: str) -> DirectorySource:
    root.mkdir(parents=True, exist_ok=True)
    (root / PROJECT_FILE).write_text('[project]\nname = "parity"\n', encoding="utf-8")
    indented = "\n".join("    " + line for line in _dedent(body).splitlines())
    write_file(root, "main.flow", CHILDREN + '\nif __name__ == "__flow__":\n' + indented + "\n")
    return DirectorySource(root)


def _dedent(text: str) -> str:
    import textwrap
    return textwrap.dedent(text).strip("\n")


def _normalised(value: Any, ids: list[str]) -> Any:
    """``value`` as JSON text with each flow id replaced by its place in creation order."""
    text = json.dumps(value, sort_keys=True)
    for place, flow_id in enumerate(ids):
        text = re.sub(rf"\b{re.escape(flow_id)}\b", f"<flow {place}>", text)
    return json.loads(text)


def _memory_side(tree: DirectorySource) -> list[dict[str, Any]]:
    grid = MemoryGrid(tree)
    grid.run({"module": "main.flow", "function": None})
    ids = list(grid.journals)  # in creation order
    flows = []
    for flow_id in ids:
        outcome = grid.outcomes[flow_id]
        end: dict[str, Any] = ({"status": "completed", "result": outcome.value} if isinstance(outcome, Completed)
                               else {"status": "failed", "message": outcome.message, "traceback": outcome.traceback}
                               if isinstance(outcome, Failed) else {"status": "waiting"})
        journal = [{"kind": e.kind, "result": e.result} for e in grid.journals[flow_id] if e.kind not in ("now",)]
        flows.append({"name": grid.names[flow_id], "end": end, "journal": journal})
    return _normalised(flows, ids)


async def _grid_side(store: FlowStore, tree: DirectorySource) -> list[dict[str, Any]]:
    grid = InProcessGrid(store, tree)
    root = await grid.run("main.flow")
    records = await grid.flows_in_order(root)
    ids = [f["id"] for f in records]
    flows = []
    for flow in records:
        error = flow["error"] or {}
        end = ({"status": "completed", "result": flow["result"]} if flow["status"] == "completed"
               else {"status": flow["status"], "message": error.get("message"), "traceback": error.get("traceback")})
        journal = [{"kind": e.kind, "result": e.result} for e in await store.get_journal(flow["id"])
                   if e.kind not in ("now",)]
        flows.append({"name": flow["flow"], "end": end, "journal": journal})
    return _normalised(flows, ids)


@pytest.mark.parametrize("case", list(TABLE))
async def test_the_flow_db_and_memory_give_the_same_answers(case: str, store: FlowStore, tmp_path: Path) -> None:
    tree = _project(tmp_path / "project", TABLE[case])

    in_memory = _memory_side(tree)
    on_the_flow_db = await _grid_side(store, tree)

    assert on_the_flow_db == in_memory
    assert in_memory[0]["journal"], "the root made no request: the case tests nothing"


async def test_the_failing_child_reads_the_same_with_its_id(store: FlowStore, tmp_path: Path) -> None:
    """The wording the issue names: ``flow boom (<id>) failed: ...`` on both."""
    tree = _project(tmp_path / "project", TABLE["a failing child, waited with check = False"])
    for flows in (_memory_side(tree), await _grid_side(store, tree)):
        printed = [e["result"] for e in flows[0]["journal"] if e["kind"] == "print"]
        assert [r["ok"] for r in printed] == [True]
        boom = flows[1]
        assert boom["name"] == "boom"
        wait = next(e["result"] for e in flows[0]["journal"] if e["kind"] == "wait")
        assert wait["value"][0]["error"] == "flow boom (<flow 1>) failed: main.flow:7:5: kaboom"
