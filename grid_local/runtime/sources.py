"""Where scripts come from and how load() targets resolve: project folders, bundles, built-in libraries."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from grid_local import bundle_format
from grid_local.errors import LoadError, SourceLocation
from grid_local.runtime import dialect

PROJECT_FILE = bundle_format.PROJECT_FILE
BUILTIN_PREFIX = "pkg.flowmetal.io/"
# Built-in libraries by load target; the prelude's alias resolves to the same file.
BUILTIN_LIBRARIES = {
    "pkg.flowmetal.io/prelude/v1": "prelude.star",
    "pkg.flowmetal.io/v1/prelude": "prelude.star",
    "pkg.flowmetal.io/http/v1": "http.star",
    "pkg.flowmetal.io/workspace/v1": "workspace.star",
    "pkg.flowmetal.io/docker/v1": "docker.star",
}
PRELUDE_VERSION = "v1"


class SourceTree(Protocol):
    """Project files by project-relative POSIX path."""

    def read(self, path: str) -> str: ...


@dataclass
class DirectorySource:
    root: Path

    def read(self, path: str) -> str:
        full = self.root / path
        try:
            return full.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LoadError(f"file not found: {path}") from None
        except UnicodeDecodeError:
            raise LoadError(f"not UTF-8 text: {path}") from None


@dataclass
class MappingSource:
    files: dict[str, str]

    def read(self, path: str) -> str:
        try:
            return self.files[path]
        except KeyError:
            raise LoadError(f"file not found: {path}") from None


def find_project_root(entry: Path) -> Path:
    """The nearest folder above ``entry`` holding flowmetal.toml, else the entry script's folder."""
    entry = entry.resolve()
    for folder in [entry.parent, *entry.parent.parents]:
        if (folder / PROJECT_FILE).is_file():
            return folder
    return entry.parent


def builtin_source(target: str) -> str:
    name = BUILTIN_LIBRARIES[target]
    return resources.files("grid_local.runtime").joinpath("lib", name).read_text(encoding="utf-8")


def builtin_file(target: str) -> str:
    """The file name a built-in library is parsed under (what tracebacks and str(fn) show)."""
    return BUILTIN_LIBRARIES[target]


def is_builtin(target: str) -> bool:
    return target in BUILTIN_LIBRARIES


def resolve_load(current: str, target: str) -> str:
    """Resolve ``target`` as loaded from project file ``current``: a built-in name or a project path."""
    if target.startswith(BUILTIN_PREFIX):
        if target not in BUILTIN_LIBRARIES:
            raise LoadError(f"unknown built-in library '{target}' (known: {', '.join(sorted(BUILTIN_LIBRARIES))})")
        return target
    if target.startswith("//"):
        joined = posixpath.normpath(target[2:])
    elif target.startswith("./") or target.startswith("../"):
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
    else:
        raise LoadError(
            f"cannot load '{target}': use '//path' from the project root, './path' or '../path', "
            f"or a built-in 'pkg.flowmetal.io/<lib>/v<N>'"
        )
    if joined.startswith("../") or joined == ".." or joined.startswith("/") or target.endswith("/"):
        raise LoadError(f"cannot load '{target}': it leaves the project root")
    if not (joined.endswith(".star") or joined.endswith(".flow")):
        raise LoadError(f"cannot load '{target}': only .star and .flow files can be loaded")
    return joined


def load_line(source: str, target: str) -> int:
    """The line of the load() naming ``target`` (1 when it can't be found)."""
    pattern = re.compile(r"load\(\s*[\"']" + re.escape(target) + r"[\"']")
    for number, line in enumerate(source.splitlines(), start=1):
        if pattern.search(line):
            return number
    return 1


@dataclass(frozen=True)
class LoadEdge:
    target: str
    resolved: str
    line: int


def load_graph(tree: SourceTree, entry: str) -> dict[str, list[LoadEdge]]:
    """Every project file reachable from ``entry`` with its loads; refuses missing files, escapes and cycles."""
    graph: dict[str, list[LoadEdge]] = {}
    stack: list[str] = []

    def visit(path: str) -> None:
        if path in stack:
            cycle = " -> ".join([*stack[stack.index(path):], path])
            raise LoadError(f"load cycle: {cycle}")
        if path in graph:
            return
        source = tree.read(path)
        ast = dialect.parse(path, source)
        edges = []
        for load in ast.loads():
            line = load_line(source, load.module_id)
            try:
                resolved = resolve_load(path, load.module_id)
            except LoadError as exc:
                raise LoadError(exc.message, SourceLocation(path, line)) from None
            edges.append(LoadEdge(load.module_id, resolved, line))
        graph[path] = edges
        stack.append(path)
        for edge in edges:
            if is_builtin(edge.resolved):
                continue
            try:
                visit(edge.resolved)
            except LoadError as exc:
                if exc.location is None:
                    raise LoadError(exc.message, SourceLocation(path, edge.line)) from None
                raise
        stack.pop()

    visit(entry)
    return graph
