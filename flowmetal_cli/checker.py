"""`flowmetal check`: parse, lint and type-check scripts and everything they load, without running.

Unlike the bundler, which stops at the first refusal, the checker reports every problem it can
find, each as ``file:line:col: severity: message``. Files are type-checked after the modules they
load, with those modules' interfaces; the built-in libraries' interfaces come from type-checking
their own sources. A module that can't be parsed or resolved is treated as untyped by its loaders,
so one mistake doesn't hide the others.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark as sl

from flowmetal_cli import analysis
from flowmetal_cli.bundle import ENTRY_SUFFIXES, display_path
from grid_local.errors import LoadError, ScriptError, SourceLocation
from grid_local.runtime import dialect, habits, sources

ERROR = "error"
WARNING = "warning"
# The runtime defines __name__ in every module (it is "__flow__" in the entry script); the type
# checker does not know it.
_RUNTIME_NAMES = analysis.RUNTIME_NAMES
_NOT_FOUND = re.compile(r"Variable `(?P<name>[^`]+)` not found")
_UNDEFINED = re.compile(r"undefined name `(?P<name>[^`]+)`")
# Hints for the linter's findings, by its short name.
LINT_HINTS = {
    "unused-load": "remove the name from the load(), or use it",
    "unused-assign": "remove the assignment, or name the variable with a leading `_`",
    "unreachable": "remove the code after the return/fail, or move it before",
}
# Globals of the dialect offered as "did you mean" suggestions (each is checked to exist).
_COMMON_GLOBALS = (
    "abs", "all", "any", "bool", "dict", "dir", "enumerate", "fail", "float", "getattr", "hasattr", "hash",
    "int", "isinstance", "json", "len", "list", "map", "filter", "max", "min", "print", "range", "repr",
    "reversed", "sorted", "str", "struct", "record", "enum", "tuple", "type", "zip", "partial", "typing",
    *dialect.PREDECLARED,
)


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    column: int
    severity: str
    message: str
    hint: str = ""
    """What to write instead (shown on the next line by `flowmetal check`)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"file": self.file, "line": self.line, "column": self.column,
                                 "severity": self.severity, "message": self.message}
        if self.hint:
            found["hint"] = self.hint
        return found


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    """Every file that was checked, as displayed."""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "problems": [p.to_json() for p in self.problems],
                "errors": len(self.errors), "warnings": len(self.warnings)}


_builtin_interfaces: dict[str, sl.Interface] = {}
_builtin_undefined: dict[tuple[str, tuple[str, ...]], set[str]] = {}


def builtin_interface(target: str) -> sl.Interface:
    """The interface of a built-in library (its own errors are the host callables it can't see)."""
    file = sources.builtin_file(target)
    if file not in _builtin_interfaces:
        text = sources.builtin_source(target)
        if file == "prelude.star":
            _, interface, _ = dialect.parse(file, text).typecheck(dialect.GLOBALS, {})
        else:
            prelude = builtin_interface(dialect.PRELUDE_MODULE)
            _, interface = dialect.typecheck(file, text, {dialect.PRELUDE_MODULE: prelude})
        _builtin_interfaces[file] = interface
    return _builtin_interfaces[file]


def _undefined(file: str, source: str, names: list[str], loads: dict[str, sl.Interface]) -> set[str]:
    """Which of ``names`` a module does not define (probed by type-checking references to them)."""
    probes = "".join(f"\n{name}" for name in names)  # an expression statement per name
    try:
        errors, _ = dialect.typecheck(file, source + probes, loads)
    except ScriptError:
        return set()
    return {m["name"] for e in errors if (m := _NOT_FOUND.search(e.message)) and m["name"] in names}


_global_cache: dict[str, bool] = {}


def _learn_globals(names: set[str]) -> None:
    """Record which of ``names`` are globals of the dialect (built-ins and the predeclared prelude)."""
    unknown = sorted(n for n in names if n not in _global_cache and n.isidentifier() and n != "load")
    if not unknown:
        return
    try:
        dialect.parse("<globals>", "".join(f"{name}\n" for name in unknown))
    except ScriptError:  # a keyword among them: probe one by one
        for name in unknown:
            try:
                dialect.parse("<globals>", f"{name}\n")
            except ScriptError:
                _global_cache[name] = False
        unknown = [name for name in unknown if name not in _global_cache]
    undefined = _undefined("<globals>", "", unknown, {})
    for name in unknown:
        _global_cache[name] = name not in undefined


def is_dialect_global(name: str) -> bool:
    if name not in _global_cache:
        _learn_globals({name})
    return _global_cache.get(name, False)


def _names_in(source: str) -> set[str]:
    try:
        return {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    except (SyntaxError, ValueError):
        return set()


class _ProjectChecker:
    """Checks the files of one project; each file is checked (and reported) once."""

    def __init__(self, root: Path, report: CheckReport) -> None:
        self.root = root
        self.tree = sources.DirectorySource(root)
        self.report = report
        self.sources: dict[str, str] = {}
        self.interfaces: dict[str, sl.Interface | None] = {}
        self.flows: dict[str, dict[str, analysis.FlowSignature]] = {}
        """The flows each checked module defines, by variable name."""
        self._stack: list[str] = []

    def _add(self, path: str, line: int, column: int, severity: str, message: str, hint: str = "") -> None:
        file = path if sources.is_builtin(path) else display_path(self.root, path)
        problem = Problem(file, max(line, 1), max(column, 1), severity, message, hint)
        if problem not in self.report.problems:
            self.report.problems.append(problem)

    def _add_error(self, exc: ScriptError, path: str) -> None:
        message, hint = habits.split_hint(exc.message)
        location = exc.location
        if location is None:
            self._add(path, 1, 1, ERROR, message, hint)
        else:
            self._add(location.file, location.line, location.column, ERROR, message, hint)

    def check(self, path: str) -> sl.Interface | None:
        """Check ``path`` and what it loads; its interface, or None when it can't be typed."""
        if path in self.interfaces:
            return self.interfaces[path]
        self.interfaces[path] = None  # until checked: a cycle sees it as untyped
        source = self.tree.read(path)
        self.sources[path] = source
        self.report.files.append(display_path(self.root, path))
        try:
            ast = dialect.parse(path, source)
        except ScriptError as exc:
            self._add_error(exc, path)
            return None
        for lint in dialect.lint(ast):
            location = lint.location
            assert location is not None
            short = lint.message.rsplit("(", 1)[-1].rstrip(")")
            self._add(location.file, location.line, location.column, WARNING, lint.message, LINT_HINTS.get(short, ""))
        self._stack.append(path)
        try:
            loads, loaded_flows = self._check_loads(path, source, ast)
        finally:
            self._stack.pop()
        found = self._analyse(path, source, loaded_flows)
        try:
            errors, interface = dialect.typecheck(path, source, loads)
        except ScriptError as exc:
            self._add_error(exc, path)
            return None
        explained = {(f.line, f.column) for f in found.findings if f.severity == ERROR}
        for error in errors:
            match = _NOT_FOUND.search(error.message) or _UNDEFINED.search(error.message)
            if match and (match["name"] in _RUNTIME_NAMES or match["name"] in found.undefined):
                continue  # reported by the analysis, with a hint
            if error.location is not None and (error.location.line, error.location.column) in explained:
                continue  # the analysis said the same at the same place, with a hint
            self._add_error(error, path)
        self.interfaces[path] = interface
        return interface

    def _analyse(self, path: str, source: str, loaded_flows: dict[str, analysis.FlowSignature]) -> analysis.Analysis:
        _learn_globals(_names_in(source) | set(_COMMON_GLOBALS))
        suggestions = [name for name in _COMMON_GLOBALS if _global_cache.get(name)]
        library = bool(self._stack) or path.endswith(".star")
        found = analysis.analyse(source, is_dialect_global, loaded_flows, suggestions, library=library)
        self.flows[path] = found.flows
        for finding in found.findings:
            self._add(path, finding.line, finding.column, finding.severity, finding.message, finding.hint)
        return found

    def _check_loads(
        self, path: str, source: str, ast: sl.AstModule
    ) -> tuple[dict[str, sl.Interface], dict[str, analysis.FlowSignature]]:
        """The interfaces of what ``path`` loads, and the flows it loads by local name."""
        loads: dict[str, sl.Interface] = {}
        loaded_flows: dict[str, analysis.FlowSignature] = {}
        for load in ast.loads():
            target = load.module_id
            line = sources.load_line(source, target)
            text = source.splitlines()[line - 1] if source.splitlines() else ""
            column = text.find(target) if target in text else 0
            try:
                resolved = sources.resolve_load(path, target)
            except LoadError as exc:
                self._add(path, line, column, ERROR, exc.message)
                continue
            if sources.is_builtin(resolved):
                interface: sl.Interface | None = builtin_interface(resolved)
                module_file, module_source = sources.builtin_file(resolved), sources.builtin_source(resolved)
            elif resolved in self._stack:
                cycle = " -> ".join([*self._stack[self._stack.index(resolved):], resolved])
                self._add(path, line, column, ERROR, f"load cycle: {cycle}")
                continue
            else:
                try:
                    interface = self.check(resolved)
                except LoadError as exc:
                    self._add(path, line, column, ERROR, exc.message)
                    continue
                module_file, module_source = resolved, self.sources[resolved]
                module_flows = self.flows.get(resolved, {})
                for local, symbol in load.symbols.items():
                    if symbol in module_flows:
                        loaded_flows[local] = module_flows[symbol]
            self._check_symbols(path, line, column, target, list(load.symbols.values()), module_file, module_source)
            if interface is not None:
                loads[target] = interface
        return loads, loaded_flows

    def _check_symbols(
        self, path: str, line: int, column: int, target: str, names: list[str], module_file: str, module_source: str
    ) -> None:
        for name in names:
            if name.startswith("_"):
                self._add(path, line, column, ERROR, f"cannot load private symbol '{name}' from '{target}'")
        public = [name for name in names if not name.startswith("_")]
        if not public:
            return
        if sources.is_builtin(target):
            key = (module_file, tuple(public))
            if key not in _builtin_undefined:
                _builtin_undefined[key] = _undefined(module_file, module_source, public, {})
            undefined = _builtin_undefined[key]
        else:
            undefined = _undefined(module_file, module_source, public, {})
        for name in sorted(undefined):
            self._add(path, line, column, ERROR, f"'{target}' does not define '{name}'")


def check_paths(paths: list[Path]) -> CheckReport:
    """Check each script and everything it loads; usage problems (no such file) raise ScriptError."""
    report = CheckReport()
    checkers: dict[Path, _ProjectChecker] = {}
    for path in paths:
        if not path.is_file():
            raise ScriptError(f"{path}: no such file")
        if path.suffix not in ENTRY_SUFFIXES:
            raise ScriptError(f"{path}: not a Flowmetal script (.flow or .star)")
        root = sources.find_project_root(path)
        checker = checkers.setdefault(root, _ProjectChecker(root, report))
        relative = path.resolve().relative_to(root).as_posix()
        try:
            checker.check(relative)
        except LoadError as exc:
            checker._add(relative, 1, 1, ERROR, exc.message)
    report.problems.sort(key=lambda p: (p.file, p.line, p.column, p.severity, p.message))
    return report


class CheckError(ScriptError):
    """The check errors that keep ``flowmetal run`` from uploading: the first, and the rest as snippet."""

    def __init__(self, report: CheckReport) -> None:
        errors = report.errors
        first = errors[0]
        super().__init__(first.message, SourceLocation(first.file, first.line, first.column))
        self.report = report
        lines = [f"    hint: {first.hint}"] if first.hint else []
        for problem in errors[1:]:
            lines.append(f"error: {problem.file}:{problem.line}:{problem.column}: {problem.message}")
            if problem.hint:
                lines.append(f"    hint: {problem.hint}")
        count = len(errors)
        lines.append(f"{count} error{'' if count == 1 else 's'} (see `flowmetal check`): nothing was uploaded")
        self._snippet = "\n".join(lines)

    @property
    def snippet(self) -> str:
        return self._snippet


def refuse_check_errors(path: Path) -> None:
    """Raise CheckError when ``path`` or what it loads has a check error (``run`` does this first).

    A path that is not a script is left to the bundler, which says why in its own words.
    """
    if not path.is_file() or path.suffix not in ENTRY_SUFFIXES:
        return
    report = check_paths([path])
    if report.errors:
        raise CheckError(report)
