"""One evaluation of a flow instance: module loading, host callables, journal replay and bounds.

A FlowExecution runs synchronously in its own thread. Each action the script takes reaches
``on_action`` through the prelude's ``_host_action``: replayed from the journal when the journal
already holds it (checked for non-determinism), otherwise appended through a ``JournalPort``
*before* anything is performed, then answered. A wait that lasts longer than ``suspend_after``
suspends the flow: evaluation is abandoned and the flow resumes later by replay.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import starlark as sl

from grid_local.errors import (
    ArgumentError,
    BundleError,
    FlowCancelled,
    FlowmetalError,
    LimitError,
    LoadError,
    ScriptError,
    SourceLocation,
    location_from_starlark,
)
from grid_local.runtime import dialect, footprint, habits, journal, sources
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.limits import Limits
from grid_local.secret_refs import reference

_current = threading.local()


MIB = 1024 * 1024


@dataclass
class FlowTask:
    """What a worker needs to evaluate a flow instance."""

    flow_id: str
    entry: dict[str, Any]
    """``{"module": path, "function": name or None}``; no function means a root flow."""
    args: dict[str, Any]
    quota: dict[str, str]
    journal: list[JournalEntry]
    resources: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    """The lease epoch the worker holds the flow at (every write it makes names it)."""
    name: str = ""


class JournalPort(Protocol):
    """The seam between an evaluation and the Flow DB (the Worker API, or memory in tests)."""

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        """Commit the request (and its result when it has one); return a result answered at once."""

    def wait_result(self, task: FlowTask, seq: int, timeout: float) -> dict[str, Any] | None:
        """Block until entry ``seq`` has a result, or ``timeout`` passes (then None)."""


@dataclass
class Completed:
    value: Any


@dataclass
class Failed:
    message: str
    traceback: str = ""
    kind: str = "error"


@dataclass
class Suspended:
    seq: int


Outcome = Completed | Failed | Suspended


class _Suspend(Exception):
    def __init__(self, seq: int) -> None:
        self.seq = seq


class _FlowFailure(Exception):
    """Raised by unwrap() of an Err: ends the flow with that error (and the child's traceback)."""


def _starlark_message(text: str) -> str:
    message = text
    for line in text.splitlines():
        if line.startswith("error: "):
            message = line[len("error: "):]
    return message.removeprefix("fail: ")


class FlowExecution:
    """Evaluates one flow instance to completion, failure or suspension."""

    def __init__(self, task: FlowTask, tree: sources.SourceTree, port: JournalPort, limits: Limits) -> None:
        self.task = task
        self.tree = tree
        self.port = port
        self.limits = limits
        self.journal = list(task.journal)
        self.replayed = 0
        self._seq = 0
        self._abort: BaseException | None = None
        self._cancel_reason: str | None = None
        self._cpu_since = 0.0
        self._footprint = footprint.Footprint()
        self._child_tracebacks: dict[str, str] = {}
        self._frozen: dict[str, sl.FrozenModule] = {}
        self._loading: list[str] = []
        self._options: sl.EvalOptions | None = None

    def _running_options(self) -> sl.EvalOptions:
        if self._options is None:
            raise RuntimeError("a FlowExecution evaluates only inside run()")
        return self._options

    # -- control from other threads ---------------------------------------------------------

    def cancel(self, reason: str = "cancelled") -> None:
        self._cancel_reason = reason

    # -- evaluation -------------------------------------------------------------------------

    def run(self) -> Outcome:
        outer = getattr(_current, "execution", None)  # inline child evaluations nest (memory grid)
        _current.execution = self
        self._cpu_since = time.thread_time()
        # The options hold a bound method of this execution, and the garbage collector cannot see
        # into them (a native object): kept past the run, the cycle would keep every finished
        # execution, its journal and its task, alive for the worker's whole life.
        self._options = sl.EvalOptions(check_cancelled=self._check_cancelled, max_callstack_size=self.limits.max_callstack)
        self._footprint.start()
        try:
            return self._run()
        finally:
            self._options = None
            _current.execution = outer

    def _run(self) -> Outcome:
        outcome = self._evaluate()
        if isinstance(outcome, Completed) and self._seq < len(self.journal):
            # The script finished without reaching actions the journal recorded: it changed under the flow.
            extra = self.journal[self._seq]
            return Failed(
                f"non-determinism: the script completed after {self._seq} actions, but the journal recorded "
                f"{len(self.journal)}; the first not requested again is entry {extra.seq}, "
                f"{extra.kind}({journal.canonical_json(extra.args)})" + (f" at {extra.callsite}" if extra.callsite else ""),
                kind="NonDeterminismError",
            )
        return outcome

    def _evaluate(self) -> Outcome:
        module_path = self.task.entry["module"]
        function = self.task.entry.get("function")
        if function:
            refused = self._open_resources()
            if refused is not None:
                return refused
        try:
            module = self._evaluate_main(module_path, "__flow__" if not function else module_path)
            if not function:
                return Completed(None)
            call = dialect.parse(
                "<flow entry>",
                f'load("{dialect.PRELUDE_MODULE}", fm_context__ = "fctx")\nfm_result__ = {function}(fm_context__())\n',
            )
            sl.eval_with(self._running_options(), module, call, dialect.GLOBALS, self._file_loader(module_path))
            self._checkpoint()
            try:
                value = module["fm_result__"]
            except Exception as exc:  # a value starlark-pyo3 cannot convert
                raise ArgumentError(f"the result of flow {self.task.name or function} is not JSON-representable: {exc}")
            journal.check_json(value, f"the result of flow {self.task.name or function}")
            journal.check_size(journal.canonical_json(value), f"the result of flow {self.task.name or function}")
            return Completed(value)
        except sl.StarlarkError as exc:
            return self._outcome_of(exc)
        except (ScriptError, ArgumentError) as exc:
            return Failed(str(exc), getattr(exc, "detail", "") or str(exc), kind=type(exc).__name__)
        except BaseException as exc:  # pyo3 raises a Rust panic as PanicException, a BaseException
            return _crashed(exc)

    def _open_resources(self) -> Outcome | None:
        """Open the child's resources (each a journaled ``open`` action) before its implementation runs."""
        for name, spec in sorted((self.task.entry.get("resources") or {}).items()):
            try:
                result = self.on_action("open", json.dumps({"name": name, "spec": spec}), "")
            except _Suspend as suspended:
                return Suspended(suspended.seq)
            except FlowmetalError as exc:
                return Failed(str(exc), kind=type(exc).__name__)
            if not result["ok"]:
                return Failed(f"cannot open resource '{name}': {result['error']}", kind="ResourceError")
            self.task.resources[name] = result["value"]
        return None

    def _outcome_of(self, exc: sl.StarlarkError) -> Outcome:
        text = str(exc)
        cause = self._abort
        if isinstance(cause, _Suspend):
            return Suspended(cause.seq)
        if isinstance(cause, MemoryError):
            return _crashed(cause)
        if isinstance(cause, _FlowFailure):
            message = str(cause)
            child = self._child_tracebacks.get(message, "")
            return Failed(message, text + (f"\nCaused by:\n{child}" if child else ""))
        if isinstance(cause, ScriptError):
            return Failed(str(cause), text, kind=type(cause).__name__)
        if isinstance(cause, FlowmetalError):
            return Failed(str(cause), text, kind=type(cause).__name__)
        if cause is not None:
            return Failed(f"internal error: {cause!r}", text, kind="InternalError")
        message = _starlark_message(text)
        found = location_from_starlark(text)
        location: SourceLocation | str | None = found
        if found is not None and found.file in journal.RUNTIME_FILES:
            # Raised inside the prelude (argument checks, json.encode): the user's call is the place to point at.
            location = journal.user_callsite(text) or found
        unjsonable = re.search(r"`serde::serialize` not supported on type `([^`]+)`", message)
        if unjsonable:
            return Failed(
                f"{location}: a {unjsonable[1]} is not JSON-representable "
                "(only JSON data can be passed to flows and actions)", text, kind="ArgumentError",
            )
        missing = re.match(r"Variable `(\w+)` not found", message)
        if missing and habits.name_hint(missing[1]):
            # "did you mean `enum`?" for `sum` helps nobody: say what to write instead.
            message = habits.with_hint(f"Variable `{missing[1]}` not found", habits.name_hint(missing[1]))
        if "call stack overflow" in message:
            return Failed(
                f"call stack limit exceeded ({self.limits.max_callstack} frames; "
                f"{self.limits.hint('max_callstack', '--max-callstack')})",
                text, kind="LimitError",
            )
        return Failed(f"{location}: {message}" if location else message, text)

    def _check_cancelled(self) -> bool:
        if self._abort is not None:
            return True
        if self._cancel_reason is not None:
            self._abort = FlowCancelled(self._cancel_reason)
            return True
        if time.thread_time() - self._cpu_since > self.limits.eval_budget:
            self._abort = LimitError(
                f"evaluation budget exceeded: more than {self.limits.eval_budget:g} s of evaluation "
                f"without an action ({self.limits.hint('eval_budget', '--max-eval-budget')})"
            )
            return True
        over = self._over_memory()
        if over is not None:
            self._abort = over
            return True
        return False

    def _checkpoint(self) -> None:
        """After an evaluation ends, while what it made is still held: the memory cap holds there too
        (the evaluator's last check may have come before its last steps)."""
        over = self._over_memory()
        if over is not None:
            raise over

    def _over_memory(self) -> LimitError | MemoryError | None:
        grown = self._footprint.grown()
        if grown <= self.limits.memory_mib * MIB:
            return None
        if "memory_mib" not in self.limits.asked and "memory_mib" not in dict(self.limits.capped_by):
            # No limit of its own: the flow outgrew what its worker may use (the worker says how much).
            return MemoryError("this flow needed more memory than its worker may use")
        return LimitError(
            f"memory limit exceeded: this flow's evaluation grew its worker's memory by {grown / MIB:.1f} MiB, "
            f"more than its {self.limits.memory_mib} MiB ({self.limits.hint('memory_mib', '--worker-memory')})"
        )

    # -- modules ----------------------------------------------------------------------------

    def _evaluate_main(self, path: str, name: str) -> sl.Module:
        source = self.tree.read(path)
        ast = dialect.parse(path, source)
        module = sl.Module()
        module["__name__"] = name
        loader = self._file_loader(path)
        self._loading.append(path)
        sl.eval_with(self._running_options(), module, dialect.PREDECLARE_AST, dialect.GLOBALS, loader)
        sl.eval_with(self._running_options(), module, ast, dialect.GLOBALS, loader)
        self._checkpoint()
        self._loading.pop()
        return module

    def _file_loader(self, current: str) -> sl.FileLoader:
        return sl.FileLoader(lambda target: self._load(current, target))

    def _load(self, current: str, target: str) -> sl.FrozenModule:
        try:
            if sources.is_builtin(target):
                return builtin_module(target)
            resolved = sources.resolve_load(current, target)
            if resolved in self._frozen:
                return self._frozen[resolved]
            if resolved in self._loading:
                cycle = " -> ".join([*self._loading[self._loading.index(resolved):], resolved])
                raise LoadError(f"load cycle: {cycle}", SourceLocation(current, _load_line(self.tree, current, target)))
            try:
                self._frozen[resolved] = frozen = self._evaluate_main(resolved, resolved).freeze()
            except sl.StarlarkError as exc:
                # An error in the loaded file itself: keep its location rather than report an internal error.
                self._abort = self._abort or dialect.script_error(exc, resolved)
                raise
            return frozen
        except LoadError as exc:
            if exc.location is None:
                exc = LoadError(exc.message, SourceLocation(current, _load_line(self.tree, current, target)))
            self._abort = self._abort or exc
            raise
        except BaseException as exc:
            self._abort = self._abort or exc
            raise

    # -- host callables ---------------------------------------------------------------------

    def on_action(self, kind: str, payload: str, stack: str) -> dict[str, Any]:
        try:
            over = self._over_memory()  # stopped before the action, which then never happens
            if over is not None:
                raise over
            args = json.loads(payload)
            args_json = journal.check_size(journal.canonical_json(args), f"the request of {kind}()")
            digest = journal.request_hash(kind, args_json)
            callsite = journal.user_callsite(stack)
            self._seq += 1
            seq = self._seq
            if seq <= len(self.journal):
                entry = self.journal[seq - 1]
                journal.check_replay(entry, kind, args_json, digest, callsite)
                self.replayed += 1
            else:
                entry = JournalEntry(seq, kind, args, digest, callsite, requested_at=time.time())
                if kind in journal.LOCAL_KINDS:
                    entry.result = _perform_local(kind)
                    entry.answered_at = entry.requested_at
                answered = self.port.append(self.task, entry)
                if answered is not None:
                    entry.result = answered
                self.journal.append(entry)
            if entry.result is None:
                result = self.port.wait_result(self.task, seq, self.limits.suspend_after)
                if result is None:
                    raise _Suspend(seq)
                entry.result = result
            return self._to_starlark(entry.result)
        except BaseException as exc:
            self._abort = self._abort or exc
            raise
        finally:
            self._cpu_since = time.thread_time()

    def _to_starlark(self, result: dict[str, Any]) -> dict[str, Any]:
        if not result.get("ok") and result.get("traceback"):
            self._child_tracebacks[result["error"]] = result["traceback"]
        if result.get("ok") and isinstance(result.get("value"), list):  # wait(): one Result per task
            for item in result["value"]:
                if isinstance(item, dict) and not item.get("ok") and item.get("traceback"):
                    self._child_tracebacks[item["error"]] = item["traceback"]
        return {"ok": bool(result.get("ok")), "value": result.get("value"), "error": result.get("error")}

    def context(self) -> dict[str, Any]:
        return {
            "flow_id": self.task.flow_id,
            "args": self.task.args,
            "quota": self.task.quota,
            "resources": self.task.resources,
            "secrets": {alias: reference(name) for alias, name in (self.task.entry.get("secrets") or {}).items()},
        }

    def fail_with(self, error: Any) -> None:
        failure = _FlowFailure(error if isinstance(error, str) else json.dumps(error))
        self._abort = self._abort or failure
        raise failure


def _crashed(exc: BaseException) -> Failed:
    """The outcome of an evaluation the evaluator itself gave up on (the flow fails, the worker lives)."""
    if isinstance(exc, MemoryError) or "out of memory" in str(exc):
        return Failed("out of memory: this flow needed more memory than its worker may use", kind="MemoryError")
    return Failed(f"the evaluator crashed: {type(exc).__name__}: {exc}", kind="InternalError")


def _load_line(tree: sources.SourceTree, current: str, target: str) -> int:
    try:
        return sources.load_line(tree.read(current), target)
    except LoadError:
        return 1


def _perform_local(kind: str) -> dict[str, Any]:
    if kind == "now":
        return journal.ok(time.time())
    if kind == "random":
        return journal.ok(random.SystemRandom().random())
    if kind == "uuid":
        return journal.ok(str(uuid.uuid4()))
    return journal.ok(None)  # print: the journal entry is the log line


# -- process-wide host callables, dispatched to the execution running on this thread ----------

def _execution() -> FlowExecution:
    execution = getattr(_current, "execution", None)
    if execution is None:
        raise RuntimeError("no flow is running on this thread")
    return execution


def _host_action(kind: str, payload: str, stack: str) -> dict[str, Any]:
    return _execution().on_action(kind, payload, stack)


def _host_context() -> dict[str, Any]:
    return _execution().context()


def _host_fail(error: Any) -> None:
    _execution().fail_with(error)


_builtin_cache: dict[str, sl.FrozenModule] = {}
_builtin_lock = threading.RLock()


def builtin_module(target: str) -> sl.FrozenModule:
    """Built-in libraries are frozen once per process (they take no action at top level)."""
    file = sources.builtin_file(target)
    with _builtin_lock:
        if file in _builtin_cache:
            return _builtin_cache[file]
        module = sl.Module()
        module.add_callable("_host_action", _host_action)
        module.add_callable("_host_context", _host_context)
        module.add_callable("_host_fail", _host_fail)
        loader = sl.FileLoader(lambda t: builtin_module(t) if sources.is_builtin(t) else _refuse(t))
        if file != "prelude.star":
            sl.eval(module, dialect.PREDECLARE_AST, dialect.GLOBALS, loader)
        sl.eval(module, sl.parse(file, sources.builtin_source(target), dialect.DIALECT), dialect.GLOBALS, loader)
        _builtin_cache[file] = frozen = module.freeze()
        return frozen


def _refuse(target: str) -> sl.FrozenModule:
    raise LoadError(f"built-in libraries load only built-ins, not {target}")
