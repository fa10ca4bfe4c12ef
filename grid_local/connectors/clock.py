"""The clock connector: durable timers. Deadlines live in the Flow DB; this process fires them.

It keeps the open deadlines it was shown, sleeps until the earliest, and asks the Worker API to
fire it (a sleep ends; a receive or wait times out). After any restart it simply reloads them,
so a sleep survives the whole grid going down and fires at its original time.
"""

from __future__ import annotations

import time

from grid_local.api.wire import WireError
from grid_local.connectors.base import api_client, connector_args


def main(argv: list[str] | None = None) -> None:
    options = connector_args("clock", argv)
    api = api_client(options.api)
    version = -1
    deadlines: list[dict] = []
    while True:
        now = time.time()
        due = [d for d in deadlines if d["deadline"] <= now]
        for item in due:
            try:
                api.post("/v1/connectors/clock/fire", {"flow_id": item["flow_id"], "seq": item["seq"]})
            except WireError:
                pass
        wait = 10.0
        if deadlines and not due:
            wait = max(min(deadlines[0]["deadline"] - now, 10.0), 0.0)
        try:
            data = api.get("/v1/connectors/clock/deadlines", {"version": -1 if due else version, "wait": f"{wait:.3f}"})
        except WireError:
            time.sleep(0.2)
            continue
        version, deadlines = data["version"], data["deadlines"]


if __name__ == "__main__":
    main()
