"""The journal invariants of CONTRIBUTING.md, pinned on the Flow DB itself (no subprocesses)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from grid_local.db.results import record_once
from grid_local.db.store import FlowStore
from grid_local.errors import LeaseLostError
from grid_local.runtime import journal as jr
from grid_local.runtime.journal import JournalEntry

pytestmark = pytest.mark.timeout(60)

WORKER = "w.1"


async def _leased_flow(store: FlowStore, worker: str = WORKER) -> tuple[str, int]:
    """A root flow claimed by ``worker``: (flow id, lease epoch)."""
    await store.put_bundle("b" * 8, b"", "main.flow")
    flow_id = (await store.start_flow("b" * 8, {}, "/", "tester"))["id"]
    [task] = await store.claim(worker, 1)
    assert task["id"] == flow_id
    return flow_id, task["epoch"]


def _local(seq: int, value: Any = 1.5) -> JournalEntry:
    """A request the worker answers itself (``now``): it takes the one-statement fast path."""
    return JournalEntry(seq, "now", {}, jr.request_hash("now", "{}"), "main.flow:1", result=jr.ok(value))


def _deferred(seq: int, kind: str = "http", args: dict[str, Any] | None = None) -> JournalEntry:
    """A request answered later (the full path)."""
    args = args if args is not None else {"method": "GET", "url": "http://x", "timeout": 30}
    return JournalEntry(seq, kind, args, jr.request_hash(kind, jr.canonical_json(args)), "main.flow:2")


async def _rows(store: FlowStore, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await store.engine.all(sql, *params)]


# -- 2. appends are conditional on the lease and on the next sequence number ------------------------

@pytest.mark.parametrize("make", [_local, _deferred], ids=["fast path", "full path"])
async def test_a_stale_epoch_cannot_append(store: FlowStore, make: Any) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.release_worker(WORKER, "test")
    [task] = await store.claim("w.2", 1)  # another worker holds it now, at a later epoch
    assert task["epoch"] == epoch + 1

    with pytest.raises(LeaseLostError):
        await store.append(flow_id, WORKER, epoch, make(1))
    with pytest.raises(LeaseLostError):  # the old worker name at the new epoch is no better
        await store.append(flow_id, WORKER, epoch + 1, make(1))

    assert await store.get_journal(flow_id) == []
    await store.append(flow_id, "w.2", epoch + 1, make(1))
    assert [e.seq for e in await store.get_journal(flow_id)] == [1]


@pytest.mark.parametrize("make", [_local, _deferred], ids=["fast path", "full path"])
@pytest.mark.parametrize("seq", [0, 3])
async def test_only_the_next_sequence_number_is_accepted(store: FlowStore, make: Any, seq: int) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _local(1))

    with pytest.raises(LeaseLostError, match="journal of .* is at 1"):
        await store.append(flow_id, WORKER, epoch, make(seq))  # before the first entry, or a gap

    assert [e.seq for e in await store.get_journal(flow_id)] == [1]


async def test_another_request_at_a_taken_sequence_number_is_refused(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _local(1))
    random_1 = JournalEntry(1, "random", {}, jr.request_hash("random", "{}"), "main.flow:1", result=jr.ok(0.5))

    for entry in (random_1, _deferred(1)):
        with pytest.raises(LeaseLostError, match="journal of .* is at 1"):
            await store.append(flow_id, WORKER, epoch, entry)

    assert [(e.seq, e.kind) for e in await store.get_journal(flow_id)] == [(1, "now")]


async def test_the_same_request_sent_again_gets_its_recorded_answer_and_writes_nothing(store: FlowStore) -> None:
    """A worker retrying an append whose answer it never got (the API restarted) is answered from
    the journal."""
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _local(1, 2.5))
    events = await store.events_after(0)

    again = await store.append(flow_id, WORKER, epoch, _local(1, 9.0))

    assert again.result == jr.ok(2.5)
    assert [e.result for e in await store.get_journal(flow_id)] == [jr.ok(2.5)]
    assert await store.events_after(0) == events


async def test_a_cancelled_flow_takes_no_more_entries(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.cancel_flow(flow_id)
    for entry in (_local(1), _deferred(1)):
        with pytest.raises(LeaseLostError, match="cancelled"):
            await store.append(flow_id, WORKER, epoch, entry)
    assert await store.get_journal(flow_id) == []


# -- 3. a result is recorded at most once ---------------------------------------------------------

async def test_a_result_is_recorded_at_most_once(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _deferred(1))
    [claimed] = await store.claim_requests(["http"], "http.1", 10)
    assert (claimed["flow_id"], claimed["seq"]) == (flow_id, 1)

    assert await store.record_result(flow_id, 1, jr.ok("first"), executor="http.1") is True
    assert await store.record_result(flow_id, 1, jr.ok("second"), executor="http.1") is False
    assert await store.record_result(flow_id, 1, jr.err(jr.INTERRUPTED)) is False
    assert await store.release_executor("http.1") == 0  # nothing left in flight to declare failed
    async with store.engine.transaction():  # the statement itself refuses a second answer
        assert await record_once(store.engine, flow_id, 1, jr.ok("third")) is False

    assert (await store.result_of(flow_id, 1))[0] == jr.ok("first")
    assert await store.claim_requests(["http"], "http.2", 10) == []  # never performed again
    answered = await _rows(store, "SELECT kind FROM events WHERE flow_id = ? AND kind = 'result'", flow_id)
    assert len(answered) == 1


async def test_a_request_held_by_another_executor_is_not_answered_by_this_one(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _deferred(1))
    await store.claim_requests(["http"], "http.1", 10)

    assert await store.record_result(flow_id, 1, jr.ok("late"), executor="http.0") is False
    assert (await store.result_of(flow_id, 1))[0] is None


async def test_a_deadline_after_the_answer_changes_nothing(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _deferred(1, "receive", {"inbox": "_stdin", "timeout": 0}))
    await store.send_message(flow_id, "_stdin", "hello", "user:test")

    assert (await store.result_of(flow_id, 1))[0] == jr.ok("hello")
    assert await store.fire_deadline(flow_id, 1) is False
    assert (await store.result_of(flow_id, 1))[0] == jr.ok("hello")


# -- 9. events for every change -----------------------------------------------------------------

async def test_every_change_writes_its_event(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _local(1))
    await store.append(flow_id, WORKER, epoch,
                       JournalEntry(2, "print", {"text": "hi"}, "h", "main.flow:3", result=jr.ok(None)))
    await store.append(flow_id, WORKER, epoch, _deferred(3))
    await store.claim_requests(["http"], "http.1", 10)
    await store.record_result(flow_id, 3, jr.err("HTTP 503"), executor="http.1")
    await store.send_message(flow_id, "_stdout", "a log line", "user:test")
    await store.suspend(flow_id, WORKER, epoch)
    [again] = await store.claim(WORKER, 1)
    await store.finish(flow_id, WORKER, again["epoch"], "completed", result=42)

    events = [(e["type"], e.get("seq"), e.get("status"), e.get("kind")) for e in await store.events_after(0)]
    assert events == [
        ("flow", None, "pending", None),             # created
        ("flow", None, "running", None),             # claimed
        ("request", 1, None, "now"), ("result", 1, None, "now"),
        ("request", 2, None, "print"), ("log", 2, None, "print"),
        ("request", 3, None, "http"),
        ("result", 3, None, "http"),
        ("log", None, None, None),                   # the message to _stdout
        ("flow", None, "waiting", None),             # suspended
        ("flow", None, "running", None),             # claimed again (its result had landed)
        ("flow", None, "completed", None),           # ended
    ]
    assert all(e["flow_id"] == flow_id and e["root"] == flow_id for e in await store.events_after(0))


async def test_a_refused_append_writes_no_event(store: FlowStore) -> None:
    flow_id, epoch = await _leased_flow(store)
    before = await store.events_after(0)
    for entry in (_local(2), _deferred(2)):
        with pytest.raises(LeaseLostError):
            await store.append(flow_id, WORKER, epoch, entry)
    assert await store.events_after(0) == before


# -- 8. an uncommitted result never leaves the process ----------------------------------------------

async def test_an_uncommitted_result_is_never_visible(store: FlowStore) -> None:
    """SQLite: one shared connection, so the read waits for the write lock. PostgreSQL: the read runs
    on a connection of its own and answers what is committed, without waiting."""
    flow_id, epoch = await _leased_flow(store)
    await store.append(flow_id, WORKER, epoch, _deferred(1))
    written, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        with pytest.raises(RuntimeError):
            async with store.engine.transaction():
                assert await record_once(store.engine, flow_id, 1, jr.ok("uncommitted"))
                written.set()
                await release.wait()
                raise RuntimeError("roll back")

    writing = asyncio.create_task(writer())
    await written.wait()
    reading = asyncio.create_task(store.result_of(flow_id, 1))
    if store.engine.dialect.name == "sqlite":
        await asyncio.sleep(0.05)  # give the read every chance to run (it must be held back)
        assert not reading.done(), "result_of answered while another coroutine's result was uncommitted"
    else:
        assert await asyncio.wait_for(asyncio.shield(reading), 10) == (None, "running")
    release.set()
    await writing

    assert await reading == (None, "running")
    assert await store.result_of(flow_id, 1) == (None, "running")


# -- the fast path and the full path write the same rows ------------------------------------------

async def test_the_fast_path_and_the_full_path_write_the_same_rows(store: FlowStore) -> None:
    fast, fast_epoch = await _leased_flow(store, "w.fast")
    full, full_epoch = await _leased_flow(store, "w.full")
    await store.add_injection(full, "delay", 0.0)  # a pending injection sends every append down the full path

    for flow_id, worker, epoch in ((fast, "w.fast", fast_epoch), (full, "w.full", full_epoch)):
        answered = await store.append(flow_id, worker, epoch, _local(1, 7.25))
        assert answered.result == jr.ok(7.25)

    def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ignored = {"flow_id", "root", "requested_at", "answered_at", "at", "id", "worker"}
        return [{k: (json.loads(v) if k == "data" else v) for k, v in r.items() if k not in ignored} for r in rows]

    journal_sql = "SELECT * FROM journal WHERE flow_id = ? ORDER BY seq"
    events_sql = "SELECT * FROM events WHERE flow_id = ? AND kind != 'flow' ORDER BY id"
    assert [r["seq"] for r in await _rows(store, journal_sql, full)] == [1]
    assert comparable(await _rows(store, journal_sql, fast)) == comparable(await _rows(store, journal_sql, full))
    fast_events = comparable(await _rows(store, events_sql, fast))
    for event in fast_events + (full_events := comparable(await _rows(store, events_sql, full))):
        event["data"].pop("worker", None)
    assert fast_events == full_events and len(fast_events) == 2
    used = await _rows(store, "SELECT used_seq FROM injections WHERE flow_id = ?", full)
    assert used == [{"used_seq": 1}], "the full path was not taken"
