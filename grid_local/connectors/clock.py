"""The clock connector: durable timers and cron schedules. Both live in the Flow DB; this process fires them.

It keeps the open deadlines and the schedules' next fire times it was shown, sleeps until the
earliest, and asks the Worker API to fire it (a sleep ends; a receive or wait times out; a
schedule starts its flow). After any restart it simply reloads them, so a sleep survives the
whole grid going down and fires at its original time, and a schedule's missed fire times are
handled by its catch-up policy. A schedule's fire is one transaction on the Worker API's side,
conditional on the next fire time this process saw: dying before, during or after it can never
start a fire time's flow twice.

With a virtual clock (``grid up --clock virtual``) it compares with the grid's virtual time, and
when nothing is due it asks the Worker API to advance that time (which happens only when the grid
is idle), then fires what became due.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from grid_local.api.wire import WireClient, WireError, exit_if_refused
from grid_local.connectors.base import api_client, check_in, connector_args

CRASH_ENV = "FLOWMETAL_TEST_CRASH_AT_FIRE"
"""Crash tests: ``before:MARKER`` or ``after:MARKER`` SIGKILLs this process right before (after) its
first schedule fire request, once (the MARKER file, created then, keeps its restarts alive)."""


def crash_point(moment: str) -> None:
    when, _, marker = os.environ.get(CRASH_ENV, "").partition(":")
    if when == moment and marker and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def fire_schedule(api: WireClient, schedule: dict[str, Any]) -> None:
    crash_point("before")
    api.post("/v1/connectors/clock/schedules/fire", {"name": schedule["name"], "next_fire": schedule["next_fire"]})
    crash_point("after")


def main(argv: list[str] | None = None) -> None:
    options = connector_args("clock", argv)
    api = api_client(options.api, options.executor)
    check_in(api, options.executor)
    version = -1
    deadlines: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    virtual, virtual_now = False, 0.0
    while True:
        now = virtual_now if virtual else time.time()
        due = [d for d in deadlines if d["deadline"] <= now]
        due_schedules = [s for s in schedules if s["next_fire"] <= now]
        for item in due:
            try:
                api.post("/v1/connectors/clock/fire", {"flow_id": item["flow_id"], "seq": item["seq"]})
            except WireError:
                pass
        for schedule in due_schedules:
            try:
                fire_schedule(api, schedule)
            except WireError:
                time.sleep(0.5)  # the Worker API is restarting, or refused the fire: look again soon
        fired = bool(due or due_schedules)
        try:
            if virtual:
                if not fired:  # a virtual clock moves only here: when the grid is idle, to the next deadline
                    api.post("/v1/connectors/clock/advance", params={"wait": "10"})
                data = api.get("/v1/connectors/clock/deadlines", {"version": -1, "wait": "0"})
            else:
                upcoming = [d["deadline"] for d in deadlines[:1]] + [s["next_fire"] for s in schedules[:1]]
                wait = 10.0
                if upcoming and not fired:
                    wait = max(min(min(upcoming) - now, 10.0), 0.0)
                data = api.get("/v1/connectors/clock/deadlines",
                               {"version": -1 if fired else version, "wait": f"{wait:.3f}"})
        except WireError as exc:
            exit_if_refused(exc, options.executor)
            time.sleep(0.2)
            continue
        version, deadlines, schedules = data["version"], data["deadlines"], data.get("schedules", [])
        virtual, virtual_now = bool(data.get("virtual")), float(data.get("now") or 0.0)


if __name__ == "__main__":
    main()
