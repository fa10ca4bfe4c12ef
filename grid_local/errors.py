"""The one exception tree of Flowmetal.

    FlowmetalError
    ├── ScriptError            a script can't be parsed, loaded, checked or evaluated
    │   ├── LoadError          a load() that is missing, escapes the project, or cycles
    │   └── LimitError         an evaluation bound was hit (budget, call stack)
    ├── FlowFailed             a flow ended with an error (carries the chained traceback)
    ├── FlowCancelled          the flow being evaluated was cancelled
    ├── NonDeterminismError    a replayed request differs from the journal
    ├── ArgumentError          a value is not JSON-representable or fails its declared type
    ├── BundleError            a bundle is malformed, too large or does not match its digest
    ├── StoreError             the Flow DB refused a write
    │   ├── LeaseLostError     the writer no longer holds the flow's lease
    │   ├── NotFoundError      no such flow / bundle / deployment
    │   └── QuotaError         a quota node's limit or rule refused a request
    └── GridError              a grid process or API is unreachable or refused a call
        └── WireError          (api/wire.py) the Worker API, as workers and connectors reach it

The CLI's client adds ClientError (unreachable, refused, bad request) and ContextError beneath
FlowmetalError in flowmetal_cli, where the exit codes are decided.

Errors are converted to messages only at the edges (CLI, TUI, HTTP APIs).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class FlowmetalError(Exception):
    """Base of every error Flowmetal raises on purpose."""


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}" if self.column else f"{self.file}:{self.line}"


_SPAN = re.compile(r"--> (?P<file>[^\n:]+):(?P<line>\d+):(?P<col>\d+)")


def location_from_starlark(text: str) -> SourceLocation | None:
    """The last ``--> file:line:col`` span in a starlark-rust message."""
    found = list(_SPAN.finditer(text))
    if not found:
        return None
    match = found[-1]
    return SourceLocation(match["file"], int(match["line"]), int(match["col"]))


class ScriptError(FlowmetalError):
    """A script error, with where it happened and the rendered Starlark message."""

    def __init__(self, message: str, location: SourceLocation | None = None, detail: str = "") -> None:
        self.message = message
        self.location = location
        self.detail = detail
        super().__init__(f"{location}: {message}" if location else message)


    @property
    def snippet(self) -> str:
        """The offending source line(s) with starlark-rust's markers, when the error carried them."""
        lines = [line for line in self.detail.splitlines() if re.match(r"^\s*\d*\s*\|", line)]
        return "\n".join(lines).rstrip()


class LoadError(ScriptError):
    pass


class LimitError(ScriptError):
    pass


class FlowFailed(FlowmetalError):
    """A flow ended with an error; ``traceback`` is the Starlark traceback chained across flows."""

    def __init__(self, message: str, traceback: str = "") -> None:
        self.message = message
        self.traceback = traceback
        super().__init__(message)


class FlowCancelled(FlowmetalError):
    pass


class NonDeterminismError(FlowmetalError):
    pass


class ArgumentError(FlowmetalError):
    pass


class BundleError(FlowmetalError):
    pass


class StoreError(FlowmetalError):
    pass


class LeaseLostError(StoreError):
    pass


class NotFoundError(StoreError):
    pass


class GridError(FlowmetalError):
    pass


class QuotaError(StoreError):
    """A quota node refused a request: a hard limit (429 with ``retry_after``, 413 for a size) or a
    node that may not be created (403). A refused request changes nothing."""

    def __init__(self, message: str, status: int = 429, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
