"""The inbox connector: hands messages to flows waiting in receive(), in order and once.

Delivery itself is one Flow DB transaction (the message is marked consumed by the receive's
journal entry as its result is recorded), so nothing is lost or delivered twice if this
process dies between sweeps.
"""

from __future__ import annotations

import time

from grid_local.api.wire import WireError, exit_if_refused
from grid_local.connectors.base import api_client, check_in, connector_args


def main(argv: list[str] | None = None) -> None:
    options = connector_args("inbox", argv)
    api = api_client(options.api, options.executor)
    check_in(api, options.executor)
    while True:
        try:
            api.post("/v1/connectors/inbox/deliver", params={"wait": "10"})
        except WireError as exc:
            exit_if_refused(exc, options.executor)
            time.sleep(0.2)


if __name__ == "__main__":
    main()
