"""Static checks starlark-rust does not make: undefined names, flow calls, actions outside a flow.

starlark-pyo3 exposes parsing, its linter and its type checker, but not the syntax tree. Starlark's
grammar is a subset of Python's, so a file the dialect has parsed is read again with Python's
``ast`` to walk it:

- every name must resolve (a local, a module global, a load, or a global of the dialect), with a
  hint for the names Python has and Starlark lacks (``sum``, ``open``, ``Exception``, ...);
- a call to a flow declared with ``flow(implementation = ..., args = {...})`` in this file or
  loaded from the project passes only declared arguments, every required one, and literal values of
  the declared type (the same rules the prelude's ``_check_args`` applies at run time);
- ``fctx.<field>`` must name a flow context (a parameter), not the prelude function ``fctx``;
  ``fctx.actions.<name>`` must be an action; and no action or flow call runs at module top level
  outside ``if __name__ == "__flow__":``, where it would run again whenever the module is evaluated
  (for every child flow, and in every flow that loads it).
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from grid_local.runtime import habits, sources

ERROR = "error"
WARNING = "warning"
# Defined by the runtime in every module ("__flow__" in the entry script).
RUNTIME_NAMES = frozenset({"__name__"})
_CONTEXT_FIELDS = ("flow_id", "args", "quota", "resources", "actions")
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True, order=True)
class Finding:
    line: int
    column: int
    severity: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class ArgDecl:
    kind: str
    required: bool


@dataclass(frozen=True)
class FlowSignature:
    """What a flow declares: ``declared`` is None when it accepts any keyword arguments."""

    name: str
    declared: dict[str, ArgDecl] | None
    known: bool = True
    """False when ``args`` is not a literal dict of ``args.<kind>()`` calls: calls are not checked."""


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    flows: dict[str, FlowSignature] = field(default_factory=dict)
    """The flows this module defines at top level, by variable name."""
    undefined: set[str] = field(default_factory=set)


def _struct_fields(tree: ast.Module, variable: str) -> list[str]:
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == variable and isinstance(node.value, ast.Call)):
            return [k.arg for k in node.value.keywords if k.arg]
    return []


def _prelude_tree() -> ast.Module:
    return ast.parse(sources.builtin_source("pkg.flowmetal.io/prelude/v1"))


_PRELUDE = _prelude_tree()
# Read from the prelude itself, so a new action or argument kind is known here the day it is added.
ACTIONS = tuple(_struct_fields(_PRELUDE, "_ACTIONS"))
ARG_KINDS = tuple(_struct_fields(_PRELUDE, "args"))


def _literal_kind(node: ast.expr) -> str | None:
    """The Starlark ``type()`` of a literal expression; None when it is not a literal."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
        if not (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
            return None
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return "bool"
        return {int: "int", float: "float", str: "string", type(None): "NoneType"}.get(type(value))
    if isinstance(node, ast.JoinedStr):
        return "string"
    if isinstance(node, (ast.List, ast.ListComp)):
        return "list"
    if isinstance(node, (ast.Dict, ast.DictComp)):
        return "dict"
    if isinstance(node, ast.Tuple):
        return "tuple"
    return None


def _type_ok(kind: str, given: str) -> bool:
    """The prelude's ``_type_ok``."""
    return kind == "any" or given == kind or (kind == "float" and given == "int")


def _flow_signature(name: str, call: ast.Call) -> FlowSignature:
    spec: ast.expr | None = call.args[1] if len(call.args) > 1 else None
    for keyword in call.keywords:
        if keyword.arg == "args":
            spec = keyword.value
    if spec is None:
        return FlowSignature(name, None)
    if not isinstance(spec, ast.Dict):
        return FlowSignature(name, None, known=False)
    declared: dict[str, ArgDecl] = {}
    for key, value in zip(spec.keys, spec.values):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute) and isinstance(value.func.value, ast.Name)
                and value.func.value.id == "args" and value.func.attr in ARG_KINDS):
            return FlowSignature(name, None, known=False)
        options = {k.arg: k.value for k in value.keywords if k.arg}
        if value.args:
            options.setdefault("default", value.args[0])
        default = options.get("default")
        has_default = default is not None and not (isinstance(default, ast.Constant) and default.value is None)
        required_node = options.get("required")
        if isinstance(required_node, ast.Constant) and isinstance(required_node.value, bool):
            required = required_node.value
        else:
            required = not has_default
        declared[key.value] = ArgDecl(value.func.attr, required)
    return FlowSignature(name, declared or None)


def _is_flow_guard(test: ast.expr) -> bool:
    """``__name__ == "__flow__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    flows = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__flow__"]
    return len(names) == 1 and len(flows) == 1


def _load_bindings(statement: ast.stmt) -> list[tuple[str, str]]:
    """``(local, symbol)`` pairs of a top-level ``load()``; [] for any other statement."""
    if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
            and isinstance(statement.value.func, ast.Name) and statement.value.func.id == "load"):
        return []
    call = statement.value
    pairs = [(a.value, a.value) for a in call.args[1:] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    pairs += [(k.arg, k.value.value) for k in call.keywords
              if k.arg and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str)]
    return pairs


class _Bindings(ast.NodeVisitor):
    """The names a block of statements binds, not looking inside nested functions or comprehensions."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.names.add(node.id)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.names.add(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        pass

    def _skip(self, node: ast.AST) -> None:
        pass

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _skip


def _bound(statements: Iterable[ast.AST]) -> set[str]:
    collector = _Bindings()
    for statement in statements:
        collector.visit(statement)
    return collector.names


def _parameters(arguments: ast.arguments) -> set[str]:
    every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
    every += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
    return {a.arg for a in every}


class _Analyser(ast.NodeVisitor):
    def __init__(self, lines: list[str], is_global: Callable[[str], bool], suggestions: Iterable[str]) -> None:
        self.lines = lines
        self.is_global = is_global
        self.suggestions = set(suggestions)
        self.scopes: list[set[str]] = []
        self.flows: dict[str, FlowSignature] = {}
        self.at_load_time = False
        self.reevaluated = ""
        """Why top-level code of this module runs more than once ("" when it runs once, in its root flow)."""
        self.analysis = Analysis()

    # -- reporting ---------------------------------------------------------------------------

    def _column(self, node: ast.AST) -> int:
        """1-based character column (Python's ast counts UTF-8 bytes)."""
        row = getattr(node, "lineno", 1) - 1
        text = self.lines[row] if 0 <= row < len(self.lines) else ""
        return len(text.encode("utf-8")[: getattr(node, "col_offset", 0)].decode("utf-8", "ignore")) + 1

    def _report(self, node: ast.AST, message: str, hint: str = "", severity: str = ERROR) -> None:
        finding = Finding(getattr(node, "lineno", 1), self._column(node), severity, message, hint)
        if finding not in self.analysis.findings:
            self.analysis.findings.append(finding)

    # -- scopes ------------------------------------------------------------------------------

    def _resolve(self, name: str) -> str | None:
        """"local", "module" or "global" (the dialect's), or None when the name is defined nowhere."""
        for depth in range(len(self.scopes) - 1, -1, -1):
            if name in self.scopes[depth]:
                return "module" if depth == 0 else "local"
        if name in RUNTIME_NAMES or self.is_global(name):
            return "global"
        return None

    def _flow_named(self, node: ast.expr) -> FlowSignature | None:
        """The flow a name refers to, under the name this module calls it."""
        if isinstance(node, ast.Name) and self._resolve(node.id) == "module" and node.id in self.flows:
            found = self.flows[node.id]
            return FlowSignature(node.id, found.declared, found.known)
        return None

    def _is_prelude(self, node: ast.expr, name: str) -> bool:
        return isinstance(node, ast.Name) and node.id == name and self._resolve(name) == "global"

    def module(self, tree: ast.Module) -> None:
        names = _bound(tree.body)
        for statement in tree.body:
            names.update(local for local, _ in _load_bindings(statement))
        self.scopes.append(names)
        self.at_load_time = True
        for statement in tree.body:
            if _load_bindings(statement) or (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call)
                                            and isinstance(statement.value.func, ast.Name)
                                            and statement.value.func.id == "load"):
                continue
            self.visit(statement)
        self.scopes.pop()

    # -- statements that open scopes ---------------------------------------------------------

    def _function(self, node: ast.FunctionDef | ast.Lambda, body: list[ast.AST]) -> None:
        arguments = node.args
        for default in [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]:
            self.visit(default)
        for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                         *(a for a in (arguments.vararg, arguments.kwarg) if a is not None)]:
            if argument.annotation is not None:
                self.visit(argument.annotation)
        if isinstance(node, ast.FunctionDef) and node.returns is not None:
            self.visit(node.returns)
        outer = self.at_load_time
        self.at_load_time = False
        self.scopes.append(_parameters(arguments) | _bound(body))
        for statement in body:
            self.visit(statement)
        self.scopes.pop()
        self.at_load_time = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node, list(node.body))

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, [node.body])

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        self.scopes.append(_bound(g.target for g in node.generators))
        for generator in node.generators:
            self._check_iterable(generator.iter)
            self.visit(generator.iter)
            for condition in generator.ifs:
                self.visit(condition)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.scopes.pop()

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_If(self, node: ast.If) -> None:
        if len(self.scopes) == 1 and _is_flow_guard(node.test):
            self.visit(node.test)
            outer = self.at_load_time
            self.at_load_time = False  # runs only in the root flow of the entry script
            for statement in node.body:
                self.visit(statement)
            self.at_load_time = outer
            for statement in node.orelse:
                self.visit(statement)
            return
        self.generic_visit(node)

    # -- names -------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or self._resolve(node.id) is not None:
            return
        self.analysis.undefined.add(node.id)
        hint = habits.name_hint(node.id)
        if not hint:
            known = set().union(*self.scopes) | self.suggestions
            close = difflib.get_close_matches(node.id, sorted(known), n=1)
            hint = (f"did you mean `{close[0]}`?" if close else
                    "define it, or bring it in with load(\"//lib/x.star\", \"name\")")
        self._report(node, f"undefined name `{node.id}`", hint)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        base = node.value
        if self._is_prelude(base, "fctx") and node.attr in _CONTEXT_FIELDS:
            self._report(base, f"`fctx.{node.attr}`: `fctx` here is the prelude's function, not a flow context",
                         "take the context as the implementation's parameter (`def _build_impl(fctx):`), "
                         f"or call the function: `fctx().{node.attr}`")
        if isinstance(base, ast.Attribute) and base.attr == "actions" and self._is_context(base.value) \
                and node.attr not in ACTIONS:
            close = difflib.get_close_matches(node.attr, ACTIONS, n=1)
            self._report(node, f"there is no action `{node.attr}`",
                         (f"did you mean `{close[0]}`? " if close else "") + f"actions: {', '.join(ACTIONS)}")
        self.generic_visit(node)

    def _is_context(self, node: ast.expr) -> bool:
        """``fctx()`` or a plain name (a context parameter, or the prelude's fctx misused)."""
        if isinstance(node, ast.Call):
            return self._is_prelude(node.func, "fctx")
        return isinstance(node, ast.Name)

    # -- calls -------------------------------------------------------------------------------

    def visit_For(self, node: ast.For) -> None:
        self._check_iterable(node.iter)
        self.generic_visit(node)

    def _check_iterable(self, node: ast.expr) -> None:
        if _literal_kind(node) == "string":
            self._report(node, "a string is not iterable in Starlark",
                         "iterate over its characters with `.elems()`: `for c in \"abc\".elems():`")

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if self._is_prelude(func, "print"):
            for keyword in node.keywords:
                if keyword.arg and keyword.arg != "sep":
                    self._report(keyword, f"print() takes no `{keyword.arg}`",
                                 "each print() is one line of the flow's log; only `sep` is accepted")
        flow = self._flow_named(func)
        if flow is not None:
            self._check_flow_call(flow, node, node.args)
        action = self._action_name(func)
        if action == "run" and node.args:
            target = self._flow_named(node.args[0])
            if target is not None:
                self._check_flow_call(target, node, node.args[1:], ignore=("check",))
        retried = None
        if isinstance(func, ast.Call) and self._is_prelude(func.func, "retry") and func.args:
            retried = self._flow_named(func.args[0])
            if retried is not None:
                self._check_flow_call(retried, node, node.args)
        if self.at_load_time and self.reevaluated:
            what = (f"`fctx().actions.{action}`" if action
                    else f"the flow `{func.id}`" if isinstance(func, ast.Name) and flow is not None
                    else "a retried flow" if isinstance(func, ast.Call) and self._is_prelude(func.func, "retry")
                    else "`sleep`" if self._is_prelude(func, "sleep") else "")
            if what:
                self._report(node, f"{what} is called while the module loads, outside any flow: {self.reevaluated}",
                             "call it from a function, or under `if __name__ == \"__flow__\":` in the entry script")
        self.generic_visit(node)

    def _action_name(self, func: ast.expr) -> str:
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Attribute) and func.value.attr == "actions"
                and self._is_context(func.value.value)):
            return func.attr
        return ""

    def _check_flow_call(self, flow: FlowSignature, call: ast.Call, positional: list[ast.expr],
                         ignore: tuple[str, ...] = ()) -> None:
        if positional:
            self._report(positional[0], f"flow `{flow.name}` takes keyword arguments only",
                         f"name each argument: `{flow.name}(name = value)`")
        if not flow.known or flow.declared is None:
            return
        declared = flow.declared
        given = {k.arg: k for k in call.keywords if k.arg and k.arg not in ignore}
        for name, keyword in given.items():
            if name not in declared:
                close = difflib.get_close_matches(name, sorted(declared), n=1)
                self._report(keyword, f"flow `{flow.name}` has no argument `{name}` "
                             f"(declared: {', '.join(sorted(declared))})",
                             f"did you mean `{close[0]}`?" if close else
                             f"declare it in the flow's `args = {{...}}`, e.g. `\"{name}\": args.string()`")
                continue
            kind = _literal_kind(keyword.value)
            if kind is not None and not _type_ok(declared[name].kind, kind):
                self._report(keyword.value, f"argument `{name}` of flow `{flow.name}` must be "
                             f"{declared[name].kind}, got {kind}",
                             f"pass {_a(declared[name].kind)}, or declare `\"{name}\": args.{_kind_of(kind)}()`")
        if any(k.arg is None for k in call.keywords):
            return  # **kwargs: what it holds is not known here
        for name, decl in declared.items():
            if decl.required and name not in given:
                self._report(call, f"flow `{flow.name}` is called without its required argument `{name}`",
                             f"pass `{name} = ...`, or give it a default: `args.{decl.kind}(default = ...)`")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind_of(literal: str) -> str:
    return literal if literal in ARG_KINDS else "any"


def analyse(
    source: str,
    is_global: Callable[[str], bool],
    loaded_flows: dict[str, FlowSignature] | None = None,
    suggestions: Iterable[str] = (),
    library: bool = False,
) -> Analysis:
    """The findings for one module (already parsed by the dialect) and the flows it defines.

    ``is_global`` says whether a name is a global of the dialect (built-ins and the prelude);
    ``loaded_flows`` are the flows its loads bring in, by local name; ``library`` is true for a
    module other modules load (its top level runs in every flow that loads it).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return Analysis()
    analyser = _Analyser(source.splitlines(), is_global, suggestions)
    analyser.flows.update(loaded_flows or {})
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name) and isinstance(statement.value, ast.Call)
                and isinstance(statement.value.func, ast.Name) and statement.value.func.id == "flow"):
            name = statement.targets[0].id
            analyser.flows[name] = analyser.analysis.flows[name] = _flow_signature(name, statement.value)
    if library:
        analyser.reevaluated = "top-level code of a loaded module runs again in every flow that loads it"
    elif analyser.analysis.flows:
        analyser.reevaluated = ("this file defines flows, and each child flow evaluates the whole file again "
                                "(only the `if __name__ == \"__flow__\":` block is skipped)")
    analyser.module(tree)
    analyser.analysis.findings.sort()
    return analyser.analysis
