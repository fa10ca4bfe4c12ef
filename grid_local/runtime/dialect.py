"""The Flowmetal dialect of Starlark: parsing, globals, lint and type checks, with file:line:col errors."""

from __future__ import annotations

import starlark as sl

from grid_local.errors import ScriptError, SourceLocation, location_from_starlark
from grid_local.runtime import habits

PRELUDE_MODULE = "pkg.flowmetal.io/prelude/v1"
PRELUDE_ALIASES = frozenset({PRELUDE_MODULE, "pkg.flowmetal.io/v1/prelude"})
# Names every flow file sees without loading them (DESIGN.md section 1).
PREDECLARED = (
    "flow", "args", "FlowContext", "fctx", "Ok", "Err", "Result", "is_ok", "unwrap", "retry", "sleep",
    "print",  # the journaled print replaces the built-in one
)


def _dialect() -> sl.Dialect:
    dialect = sl.Dialect.extended()
    dialect.enable_types = sl.DialectTypes.ENABLE
    dialect.enable_f_strings = True
    dialect.enable_top_level_stmt = True
    dialect.enable_lambda = True
    dialect.enable_def = True
    dialect.enable_load = True
    dialect.enable_keyword_only_arguments = True
    return dialect


DIALECT = _dialect()
GLOBALS = sl.Globals.extended_by([
    sl.LibraryExtension.StructType,
    sl.LibraryExtension.RecordType,
    sl.LibraryExtension.EnumType,
    sl.LibraryExtension.Json,
    sl.LibraryExtension.Typing,
    sl.LibraryExtension.Map,
    sl.LibraryExtension.Filter,
    sl.LibraryExtension.Partial,
    sl.LibraryExtension.Print,  # replaced per module by the journaled print; kept so checks know the name
    sl.LibraryExtension.CallStack,
])


def script_error(exc: sl.StarlarkError, fallback_file: str = "", cls: type[ScriptError] = ScriptError) -> ScriptError:
    """Wrap a starlark-rust error with its file, line and column (the last span it names)."""
    text = str(exc)
    location = location_from_starlark(text)
    message = text
    for line in text.splitlines():
        if line.startswith("error: "):
            message = line[len("error: "):]
    if location is None and fallback_file:
        location = SourceLocation(fallback_file, 1, 0)
    return cls(message, location, detail=text)


def prelude_load_line(explicit_loads: frozenset[str] | set[str] = frozenset()) -> str:
    """A ``load()`` of the predeclared prelude names the script does not load itself."""
    names = ", ".join(f'"{name}"' for name in PREDECLARED if name not in explicit_loads)
    return f'load("{PRELUDE_MODULE}", {names})\n' if names else "\n"


# Evaluated into every module before its own AST: that is how the prelude is predeclared.
PREDECLARE_AST = sl.parse("<prelude>", prelude_load_line(), DIALECT)


def parse(filename: str, source: str) -> sl.AstModule:
    """Parse ``source`` in the Flowmetal dialect; raise ScriptError naming file:line:col.

    When the error stops at a Python construct the dialect lacks, the message says what to write
    instead (``habits.parse_hint``).
    """
    try:
        return sl.parse(filename, source, DIALECT)
    except sl.StarlarkError as exc:
        error = script_error(exc, filename)
        line = error.location.line if error.location is not None and error.location.file == filename else 0
        hint = habits.parse_hint(error.message, source, line)
        if hint:
            # The list of tokens the parser expected says less than the hint: drop it.
            message = error.message.split(", expected one of", 1)[0]
            error = ScriptError(habits.with_hint(message, hint), error.location, error.detail)
        raise error from None


def explicit_prelude_loads(ast: sl.AstModule) -> set[str]:
    return {local for load in ast.loads() if load.module_id in PRELUDE_ALIASES for local in load.symbols}


def lint(ast: sl.AstModule) -> list[ScriptError]:
    """The linter's findings, each with file:line:col."""
    problems = []
    for item in ast.lint():
        if item.short_name == "unused-argument" and "`fctx`" in item.problem:
            continue  # flows and resource specs take the flow context whether they use it or not
        span = item.resolved_location
        location = SourceLocation(span.file, span.span.begin.line + 1, span.span.begin.column + 1)
        problems.append(ScriptError(f"{item.problem} ({item.short_name})", location))
    return problems


def typecheck(
    filename: str, source: str, loads: dict[str, sl.Interface]
) -> tuple[list[ScriptError], sl.Interface]:
    """Type-check a script with the prelude predeclared (one line is prepended, so lines shift back by one)."""
    ast = parse(filename, source)
    checked = parse(filename, prelude_load_line(explicit_prelude_loads(ast)) + source)
    errors, interface, _ = checked.typecheck(GLOBALS, loads)
    found = []
    for error in errors:
        text = str(error)
        location = location_from_starlark(text)
        if location is not None and location.file == filename:
            location = SourceLocation(location.file, max(location.line - 1, 1), location.column)
        message = text.splitlines()[0].removeprefix("error: ")
        if "unresolved ident" in message and error.span is not None:
            name = _span_text(source, error.span.span, line_offset=1)
            message = f"undefined name `{name}`" if name else "undefined name"
        found.append(ScriptError(message, location, text))
    return found, interface


def _span_text(source: str, span: sl.ResolvedSpan, line_offset: int = 0) -> str:
    """The source text a single-line span covers (0-based lines and columns, as starlark-rust gives)."""
    lines = source.splitlines()
    row = span.begin.line - line_offset
    if span.begin.line != span.end.line or not 0 <= row < len(lines):
        return ""
    return lines[row][span.begin.column:span.end.column]
