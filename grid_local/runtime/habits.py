"""What to write instead: hints for the Python constructs and names the Starlark dialect lacks.

Parse errors from starlark-rust name the keyword or symbol they stopped at, not the way out.
``parse_hint`` adds it, from the error message (reserved keywords) or, for the constructs that
fail with a generic "unexpected symbol", from Python's own parse of the same line (Starlark's
grammar is a subset of Python's, so Python reads almost every Starlark-with-Python-habits file).
``name_hint`` does the same for names Python has and Starlark does not (``sum``, ``open``, ...).
"""

from __future__ import annotations

import ast
import re

_EXCEPTIONS = (
    "there are no exceptions: `fail(\"message\")` ends the flow with an error; to handle a failure, "
    "call with `check = False` and test the Result (`r = fctx.actions.http(\"GET\", url, check = False)`, "
    "then `if not r.ok: ...`), or return `Err(...)` and let the caller decide"
)
_LOAD = (
    "write `load(\"pkg.flowmetal.io/http/v1\", \"get\")` for a built-in library, or "
    "`load(\"//lib/x.star\", \"name\")` for a file of the project"
)
_REBIND = (
    "a function cannot rebind a variable outside it: return the new value, or keep the state in a "
    "dict or list and change that"
)
_ASYNC = (
    "every action already waits durably, so call it directly; to run child flows at the same time, start "
    "each with `fctx.actions.run(f, ...)` and collect them with `fctx.actions.wait(tasks)`"
)

KEYWORD_HINTS = {
    "while": "Starlark has no `while`: loop over a bound, `for attempt in range(100):`, and `break` "
             "when done (to wait for something, use `fctx.actions.receive()` or `sleep()`)",
    "import": _LOAD,
    "from": _LOAD,
    "class": "there are no classes: use `struct(name = ..., size = ...)` for a value, "
             "`record(name = str, size = int)` for a typed shape, and plain functions for behaviour",
    "global": _REBIND,
    "nonlocal": _REBIND,
    "try": _EXCEPTIONS,
    "except": _EXCEPTIONS,
    "finally": _EXCEPTIONS,
    "raise": "write `fail(\"message\")` to end the flow with an error, or return `Err(...)` to let "
             "the caller decide",
    "with": "there are no context managers: declare a resource, `flow(..., resources = {\"ws\": lambda fctx: "
            "workspace()})`; it is opened before the implementation runs and closed when the flow ends",
    "yield": "there are no generators: build a list and return it",
    "async": _ASYNC,
    "await": _ASYNC,
    "assert": "write `if not condition: fail(\"what went wrong\")`",
    "del": "use `d.pop(key)` for a dict, `l.pop(i)` or `l.remove(x)` for a list",
    "is": "compare with `==` or `!=` (`x == None`); test a type with `type(x) == \"string\"`",
    "as": "to rename a loaded symbol, write `load(\"//lib/x.star\", local = \"name\")`",
}

# Names Python programs reach for that the dialect does not define.
NAME_HINTS = {
    "sum": "there is no `sum`: add in a loop (`total = 0`, `for x in xs: total += x`)",
    "open": "flows cannot touch files directly: run commands in a workspace resource "
            "(`exec(fctx.resources.ws, \"cat\", \"f.txt\")`)",
    "input": "to wait for a message from outside, use `fctx.actions.receive()` (sent with `flowmetal send`)",
    "set": "there is no `set`: use a dict with `True` values (`seen = {}`, `seen[x] = True`, `x in seen`)",
    "frozenset": "there is no `frozenset`: use a dict with `True` values",
    "round": "there is no `round`: `int(x + 0.5)` for a non-negative number",
    "pow": "there is no `pow` or `**`: multiply (`x * x`), or multiply in a loop",
    "divmod": "write `(a // b, a % b)`",
    "iter": "iterate with `for x in xs:` (there are no iterators)",
    "next": "iterate with `for x in xs:` and `break` (there are no iterators)",
    "format": "use `\"{}\".format(x)` or an f-string `f\"{x}\"`",
    "callable": "test with `type(f) == \"function\"`",
    "id": "there are no object identities: compare values with `==`",
    "object": "there are no classes: use `struct(...)` or `record(...)`",
    "super": "there are no classes: use `struct(...)` or `record(...)` and plain functions",
    "self": "there are no classes or methods: pass the value as an ordinary argument",
    "exit": "return from the flow, or `fail(\"message\")` to end it with an error",
    "quit": "return from the flow, or `fail(\"message\")` to end it with an error",
    "eval": "there is no `eval`: Starlark code is fixed when the flow is bundled",
    "exec": "to run a command, use a workspace resource: `load(\"pkg.flowmetal.io/workspace/v1\", \"exec\")`",
    "os": "there is no `os`: files and commands go through a workspace resource "
          "(`pkg.flowmetal.io/workspace/v1`), settings through flow arguments",
    "sys": "there is no `sys`: flow arguments come in `fctx.args`, and `fail(\"message\")` ends a flow",
    "subprocess": "run commands with `exec(fctx.resources.ws, ...)` in a workspace resource "
                  "(`pkg.flowmetal.io/workspace/v1`)",
    "time": "use `fctx.actions.now()` (seconds since the epoch, recorded) and `sleep(seconds)` (durable)",
    "datetime": "use `fctx.actions.now()`: seconds since the Unix epoch, recorded in the journal",
    "random": "use `fctx.actions.random()` (recorded, so a replay sees the same number)",
    "uuid": "use `fctx.actions.uuid()` (recorded, so a replay sees the same id)",
    "requests": "use `load(\"pkg.flowmetal.io/http/v1\", \"get\", \"post\")` or `fctx.actions.http(...)`",
    "math": "there is no `math` module: write the arithmetic with `+ - * / // %`",
    "re": "there are no regular expressions: use string methods (`split`, `startswith`, `find`, `replace`)",
    "null": "write `None`",
    "nil": "write `None`",
    "true": "write `True`",
    "false": "write `False`",
}
for _name in ("Exception", "BaseException", "ValueError", "KeyError", "TypeError", "RuntimeError",
              "IndexError", "AttributeError", "NotImplementedError", "AssertionError", "OSError",
              "IOError", "TimeoutError", "ConnectionError", "StopIteration", "ZeroDivisionError"):
    NAME_HINTS[_name] = _EXCEPTIONS

_KEYWORD = re.compile(r"cannot use reserved keyword `(?P<word>\w+)`")
# A hint travels inside the error message (so every copy of the error keeps it) after this separator.
HINT_SEPARATOR = ". Hint: "


def with_hint(message: str, hint: str) -> str:
    return f"{message}{HINT_SEPARATOR}{hint}" if hint else message


def split_hint(message: str) -> tuple[str, str]:
    """``(message, hint)`` of a message made by ``with_hint`` (the hint is "" when there is none)."""
    base, _, hint = message.partition(HINT_SEPARATOR)
    return base, hint


def name_hint(name: str) -> str:
    return NAME_HINTS.get(name, "")


def parse_hint(message: str, source: str, line: int) -> str:
    """What to write instead of the construct a parse error stopped at (``line`` is 1-based); "" if unknown."""
    keyword = _KEYWORD.search(message)
    if keyword:
        return KEYWORD_HINTS.get(keyword["word"], "")
    if "integer cannot have leading 0" in message:
        return "write `0o17` for an octal number, or drop the leading zeros"
    if message.startswith("Not a valid identifier"):
        return ("an f-string interpolates plain names only: assign the value first (`n = len(xs)`, then "
                "`f\"{n}\"`), or use `\"{}\".format(len(xs))`")
    lines = source.splitlines()
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if re.search(r"\d_\d", text):
        return "numbers take no `_` separators: write `1000000`"
    if "@" in text.lstrip()[:1]:
        return ("there are no decorators: call the function on the definition instead, "
                "e.g. `build = flow(implementation = _build_impl)`")
    return _python_construct_hint(source, line)


def _python_construct_hint(source: str, line: int) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    for node in ast.walk(tree):
        first = getattr(node, "lineno", None)
        last = getattr(node, "end_lineno", first)
        if first is None or not first <= line <= (last or first):
            continue
        hint = _construct_hint(node)
        if hint:
            return hint
    return ""


def _construct_hint(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return "there is no `**` operator: multiply (`x * x`), or multiply in a loop"
    if isinstance(node, (ast.Set, ast.SetComp)):
        return "there are no sets: use a dict with `True` values (`{x: True for x in xs}`) or a list"
    if isinstance(node, ast.NamedExpr):
        return "there is no `:=`: assign on a line of its own first"
    if isinstance(node, ast.Compare) and len(node.ops) > 1:
        return "comparisons do not chain: write `a < b and b < c`"
    if isinstance(node, (ast.For, ast.While)) and node.orelse:
        return "a loop has no `else`: set a flag in the loop and test it after"
    if isinstance(node, ast.Match):
        return "there is no `match`: write `if` / `elif` / `else`"
    if isinstance(node, (ast.List, ast.Tuple)) and any(isinstance(e, ast.Starred) for e in node.elts):
        return "there is no `*` unpacking in a literal: concatenate, `list(a) + b`"
    if isinstance(node, ast.Dict) and any(key is None for key in node.keys):
        return "there is no `**` unpacking in a literal: `d = dict(a)`, then `d.update(b)`"
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        return "there are no bytes literals: use a string"
    if isinstance(node, ast.Constant) and node.kind == "u":
        return "strings are already Unicode: drop the `u` prefix"
    return ""
