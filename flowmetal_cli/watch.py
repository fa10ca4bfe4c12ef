"""`flowmetal run --watch`: re-run a script on a grid each time it, or anything it loads, changes.

One watcher (watchfiles) covers the project root; a filter lets through only the files of the
last bundle built (the script, what it loads, flowmetal.toml), re-collected after every build.
While the last build is broken, any ``.flow``, ``.star`` or ``flowmetal.toml`` in the project
counts, so that creating a missing file is noticed.

On a change the running flow is cancelled (with its children), the script re-bundled and
started again; its output streams from a follower thread while the main thread watches. A
bundle error is printed and the watcher waits for the next change. Ctrl-C cancels the running
flow and returns 130; a ``stop`` event returns 0; ``max_runs`` returns the last run's exit code
once that many runs have ended. Status lines go to stderr, the flow's output to stdout.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import click
import typer
import watchfiles

from flowmetal_cli import console
from flowmetal_cli.bundle import build_bundle, entry_path
from flowmetal_cli.checker import refuse_check_errors
from flowmetal_cli.client import ClientError, GridClient
from flowmetal_cli.commands.run import report_outcome, upload
from flowmetal_cli.connect import connect
from flowmetal_cli.streaming import follow
from grid_local.errors import FlowmetalError
from grid_local.runtime import sources

EXIT_INTERRUPTED = 130
"""Ctrl-C: the conventional 128 + SIGINT."""
_SOURCE_SUFFIXES = (".flow", ".star")


class Event(Protocol):
    def is_set(self) -> bool: ...


def status(message: str) -> None:
    """A watcher's own line, on stderr (dimmed on a TTY), apart from the flow's output."""
    text = f"[watch] {message}"
    typer.echo(typer.style(text, dim=True) if console.use_colour(sys.stderr) else text, err=True)


@dataclass
class Run:
    """One start of the script: its flow and the thread streaming its output."""

    number: int
    flow_id: str
    thread: threading.Thread | None = None
    superseded: bool = False
    """Cancelled by the watcher (a change, or stopping): not reported as a failure."""
    outcome: int | None = None
    """Exit code of the run once it ended (None while running, or when superseded)."""
    done: threading.Event = field(default_factory=threading.Event)


class _Either:
    """Set when either event is (watchfiles polls ``is_set``)."""

    def __init__(self, *events: Event | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class Watcher:
    def __init__(self, file: Path, context: str | None, args: dict[str, Any], *,
                 connector: Callable[..., GridClient] = connect, max_runs: int | None = None,
                 quota: str | None = None) -> None:
        self.file = file
        self.context = context
        self.args = args
        self.quota = quota
        self.connector = connector
        self.max_runs = max_runs
        self.root, _ = entry_path(file)
        self.root = self.root.resolve()
        self.watched: set[str] = {str(file.resolve()), str(self.root / sources.PROJECT_FILE)}
        self.broken = False
        self.runs = 0
        self.current: Run | None = None
        self.last_outcome = console.EXIT_OK
        self.halt = threading.Event()
        self.client: GridClient | None = None

    # -- what counts as a change ---------------------------------------------------------------

    def wanted(self, change: watchfiles.Change, path: str) -> bool:
        if path in self.watched:
            return True
        if self.broken:
            name = Path(path).name
            return name == sources.PROJECT_FILE or name.endswith(_SOURCE_SUFFIXES)
        return False

    # -- one run ---------------------------------------------------------------------------------

    def grid(self) -> GridClient:
        if self.client is None:
            self.client = self.connector(self.context, autostart=True)
        return self.client

    def restart(self, reason: str | None) -> None:
        """Cancel the running flow, rebuild, start again (or report why not)."""
        cancelled = self.cancel_current()
        if console.is_tty(sys.stdout):
            click.clear()
        self.runs += 1
        if reason:
            status(f"{reason}{'; ' + cancelled if cancelled else ''}")
        try:
            refuse_check_errors(self.file)
            built = build_bundle(self.file)
        except FlowmetalError as exc:
            self.broken = True
            console.error(str(exc))
            if getattr(exc, "snippet", ""):
                typer.echo(exc.snippet, err=True)  # type: ignore[attr-defined]
            status("the script has errors; waiting for a change (Ctrl-C to stop)")
            self.end_run(console.exit_code_of(exc))
            return
        self.broken = False
        self.watched = {str((built.root / path).resolve()) for path in built.files}
        self.watched |= {str(self.file.resolve()), str(self.root / sources.PROJECT_FILE)}
        try:
            client = self.grid()
            upload(client, built)
            flow = client.start_flow(built.digest, self.args, name=self.file.name, quota=self.quota)
        except FlowmetalError as exc:
            if self.client is not None:
                self.client.close()
                self.client = None  # reconnect next time: the grid may have moved
            console.error(str(exc))
            status("waiting for a change (Ctrl-C to stop)")
            self.end_run(console.exit_code_of(exc))
            return
        run = Run(self.runs, flow["id"])
        status(f"run {run.number}: flow {run.flow_id} ({len(built.files)} files watched; Ctrl-C to stop)")
        run.thread = threading.Thread(target=self.stream, args=(run,), name=f"watch-run-{run.number}", daemon=True)
        self.current = run
        run.thread.start()

    def stream(self, run: Run) -> None:
        """In the follower thread: print the run's output until it ends, then its outcome."""
        client: GridClient | None = None
        outcome = console.EXIT_FAILED
        try:
            client = self.connector(self.context, autostart=False)
            final, client = follow(client, run.flow_id,
                                   reconnect=lambda: self.connector(self.context, autostart=False))
            if run.superseded and final is not None and final["status"] == "cancelled":
                return
            assert final is not None
            outcome = report_outcome(final)
            status(f"run {run.number} {final['status']}; waiting for a change (Ctrl-C to stop)")
        except FlowmetalError as exc:
            if not run.superseded:
                console.error(str(exc))
                outcome = console.exit_code_of(exc)
        finally:
            if client is not None:
                client.close()
            if not run.superseded:
                run.outcome = outcome
                self.end_run(outcome)
            run.done.set()

    def end_run(self, outcome: int) -> None:
        """The latest run ended by itself (not superseded): with ``max_runs`` started, stop watching."""
        self.last_outcome = outcome
        if self.max_runs is not None and self.runs >= self.max_runs:
            self.halt.set()

    def cancel_current(self, wait: float = 10.0) -> str | None:
        """Cancel the running flow (if any) and wait for its stream to end; says what was cancelled."""
        run, self.current = self.current, None
        if run is None or run.done.is_set():
            return None
        run.superseded = True
        said = None
        try:
            self.grid().cancel(run.flow_id)
            said = f"cancelled run {run.number} (flow {run.flow_id})"
        except ClientError as exc:
            if exc.status != 409:  # 409: it had just finished
                console.error(str(exc))
        except FlowmetalError as exc:
            console.error(str(exc))
        run.done.wait(wait)
        return said

    # -- the loop --------------------------------------------------------------------------------

    def loop(self, stop: Event | None, debounce_ms: int, step_ms: int) -> int:
        pending: str | None = ""  # "" = the first run, without a reason line
        try:
            for changes in watchfiles.watch(
                self.root, watch_filter=self.wanted, debounce=debounce_ms, step=step_ms, rust_timeout=200,
                yield_on_timeout=True, stop_event=_Either(stop, self.halt), raise_interrupt=True,
            ):
                if changes:
                    names = sorted({_shown(self.root, path) for _, path in changes})
                    pending = f"changed: {', '.join(names)}"
                if pending is not None and not self.halt.is_set():
                    self.restart(pending or None)
                    pending = None
        except KeyboardInterrupt:
            self.shutdown()
            status("stopped")
            return EXIT_INTERRUPTED
        self.shutdown()
        if stop is not None and stop.is_set():
            return console.EXIT_OK
        return self.last_outcome

    def shutdown(self) -> None:
        try:
            cancelled = self.cancel_current()
            if cancelled:
                status(cancelled)
        except KeyboardInterrupt:  # a second Ctrl-C: leave at once
            pass
        if self.client is not None:
            self.client.close()
            self.client = None


def _shown(root: Path, path: str) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return path


def watch_and_run(file: Path, context: str | None, args: dict[str, Any], *, stop: Event | None = None,
                  max_runs: int | None = None, debounce_ms: int = 300, step_ms: int = 50,
                  quota: str | None = None) -> int:
    """Run ``file`` now and again on every change until Ctrl-C (130), ``stop`` (0) or ``max_runs`` runs.

    With ``max_runs`` the result is the exit code of the last run (0 completed, 1 failed, 2 bundle
    error, ...). Raises BundleError at once when ``file`` is not a script that exists.
    """
    watcher = Watcher(file, context, args, max_runs=max_runs, quota=quota)
    return watcher.loop(stop, debounce_ms, step_ms)
