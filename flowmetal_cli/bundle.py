"""The bundler: an entry script and everything it loads, validated, as one deterministic archive.

``build_bundle`` finds the project root (the nearest folder holding flowmetal.toml), walks the
static ``load()`` graph, refuses what the grid would refuse (syntax errors, loads that are missing,
cycle or leave the project, symlinks leaving it, files or bundles over the size limits) and writes
the archive with ``grid_local.bundle_format``. The bytes depend only on the sources and the
settings: not on file times, discovery order, umask, the folder the project sits in or the
current directory. Line endings are normalised to ``\\n`` on read.

Errors name the file as the user would type it (relative to the current directory when the project
is below it) and the line: ``ScriptError``/``LoadError`` carry a location, ``BundleError`` carries
``file:line:`` in its message.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid_local import bundle_format
from grid_local.errors import BundleError, LoadError, ScriptError, SourceLocation
from grid_local.runtime import dialect, sources
from grid_local.runtime.limits import Limits

ENTRY_SUFFIXES = (".flow", ".star")


@dataclass(frozen=True)
class BundleLimits:
    """Size limits from ``[bundle]`` in flowmetal.toml."""

    max_file_bytes: int = bundle_format.MAX_FILE_BYTES
    """Largest single source file, in bytes."""
    max_bundle_bytes: int = bundle_format.MAX_BUNDLE_BYTES
    """Largest archive (all files plus the manifest), in bytes."""


@dataclass(frozen=True)
class BuiltBundle:
    data: bytes
    digest: str
    manifest: dict[str, Any]
    files: dict[str, str]
    root: Path
    entry: str = ""
    warnings: list[ScriptError] = field(default_factory=list)
    """Lint findings: printed, never blocking."""


def display_path(root: Path, path: str) -> str:
    """``path`` (project-relative) as the user would type it from the current directory."""
    full = root / path
    try:
        relative = os.path.relpath(full, Path.cwd())
    except ValueError:  # another drive on Windows
        return str(full)
    return full.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def load_settings(root: Path) -> dict[str, Any]:
    """The project's flowmetal.toml as plain JSON data ({} when there is none)."""
    path = root / sources.PROJECT_FILE
    if not path.is_file():
        return {}
    shown = display_path(root, sources.PROJECT_FILE)
    try:
        settings = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{shown}:1: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{match[1]}:{match[2]}" if match else "1"
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "invalid TOML"
        raise BundleError(f"{shown}:{where}: invalid TOML: {message}") from None
    converted: dict[str, Any] = _jsonable(settings, shown)
    return converted


def _jsonable(value: Any, shown: str) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item, shown) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item, shown) for item in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()  # TOML dates have no JSON spelling; the ISO form is the same text
    if isinstance(value, float) and not math.isfinite(value):
        raise BundleError(f"{shown}:1: {value} cannot be carried in a bundle's settings")
    return value


def bundle_limits(settings: dict[str, Any], root: Path) -> BundleLimits:
    section = settings.get("bundle", {})
    if not isinstance(section, dict):
        raise BundleError(f"{display_path(root, sources.PROJECT_FILE)}:1: [bundle] must be a table")
    values: dict[str, int] = {}
    for name in ("max_file_bytes", "max_bundle_bytes"):
        if name in section:
            value = section[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BundleError(
                    f"{display_path(root, sources.PROJECT_FILE)}:1: [bundle] {name} must be a positive integer"
                )
            values[name] = value
    return BundleLimits(**values)


class _ProjectReader:
    """A DirectorySource that refuses symlinks leaving the project and files over the limits.

    Refusals are raised as LoadError so that ``sources.load_graph`` attaches the line of the
    load() that reached the file; ``refusal`` remembers them so they become BundleErrors.
    """

    def __init__(self, root: Path, limits: BundleLimits) -> None:
        self.root = root
        self.resolved_root = root.resolve()
        self.limits = limits
        self.total = 0
        self.refusal: str | None = None
        self._texts: dict[str, str] = {}

    def _refuse(self, message: str) -> LoadError:
        self.refusal = message
        return LoadError(message)

    def read(self, path: str) -> str:
        if path in self._texts:
            return self._texts[path]
        full = self.root / path
        target = full.resolve()  # paths are normalised, so only a symlink can lead outside
        if not target.is_relative_to(self.resolved_root):
            raise self._refuse(f"{path} is a symlink leaving the project (to {target})")
        if not full.exists():
            raise LoadError(f"file not found: {path}")
        if not full.is_file():
            raise LoadError(f"not a file: {path}")
        size = full.stat().st_size
        if size > self.limits.max_file_bytes:
            raise self._refuse(
                f"{path} is {size} bytes, over the limit of {self.limits.max_file_bytes} "
                f"([bundle] max_file_bytes in {sources.PROJECT_FILE})"
            )
        try:
            # read_text translates \r\n to \n: a checkout on Windows bundles to the same bytes.
            text = full.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise LoadError(f"not UTF-8 text: {path}") from None
        self.total += len(text.encode("utf-8"))
        if self.total > self.limits.max_bundle_bytes:
            raise self._refuse(
                f"the bundle grows over the limit of {self.limits.max_bundle_bytes} bytes with {path} "
                f"([bundle] max_bundle_bytes in {sources.PROJECT_FILE})"
            )
        self._texts[path] = text
        return text


def _relocated(exc: ScriptError, root: Path) -> ScriptError:
    """The same error with its file shown relative to the current directory."""
    location = exc.location
    if location is None or location.file.startswith("<") or sources.is_builtin(location.file):
        return exc
    moved = SourceLocation(display_path(root, location.file), location.line, location.column)
    return type(exc)(exc.message, moved, exc.detail)


def entry_path(entry: Path) -> tuple[Path, str]:
    """The project root and the entry's project-relative path; BundleError for a bad entry."""
    if not entry.exists():
        raise BundleError(f"{entry}: no such file")
    if not entry.is_file():
        raise BundleError(f"{entry}: not a file")
    if entry.suffix not in ENTRY_SUFFIXES:
        raise BundleError(f"{entry}: an entry script ends in .flow (or .star)")
    root = sources.find_project_root(entry)
    return root, entry.resolve().relative_to(root.resolve()).as_posix()


def collect_files(entry: Path) -> tuple[Path, str, dict[str, str], dict[str, Any], BundleLimits]:
    """Root, entry path, every file it loads (validated) and the project's settings and limits."""
    root, relative = entry_path(entry)
    settings = load_settings(root)
    limits = bundle_limits(settings, root)
    try:  # the grid would fail every flow of the bundle for this: refuse it before uploading
        Limits.from_settings(settings)
    except BundleError as exc:
        shown = display_path(root, sources.PROJECT_FILE)
        raise BundleError(f"{shown}:1: {str(exc).removeprefix(sources.PROJECT_FILE + ': ')}") from None
    reader = _ProjectReader(root, limits)
    try:
        graph = sources.load_graph(reader, relative)
    except ScriptError as exc:
        if exc.location is None:  # the entry itself: there is no load() line to point at
            exc = type(exc)(exc.message, SourceLocation(relative, 1), exc.detail)
        exc = _relocated(exc, root)
        if isinstance(exc, LoadError) and reader.refusal is not None and exc.message == reader.refusal:
            raise BundleError(f"{exc.location}: {exc.message}") from None
        raise exc from None
    files = {path: reader.read(path) for path in sorted(graph)}
    return root, relative, files, settings, limits


def build_bundle(entry: Path) -> BuiltBundle:
    """Validate and archive ``entry`` and everything it loads; raise a FlowmetalError on refusal."""
    root, relative, files, settings, limits = collect_files(entry)
    warnings: list[ScriptError] = []
    for path, text in files.items():
        warnings += [_relocated(problem, root) for problem in dialect.lint(dialect.parse(path, text))]
    data, digest = bundle_format.write_bundle(relative, files, settings, prelude=sources.PRELUDE_VERSION)
    if len(data) > limits.max_bundle_bytes:
        raise BundleError(
            f"{display_path(root, relative)}:1: the bundle is {len(data)} bytes, over the limit of "
            f"{limits.max_bundle_bytes} ([bundle] max_bundle_bytes in {sources.PROJECT_FILE})"
        )
    manifest = bundle_format.read_bundle(data, digest, max_bytes=len(data), max_file_bytes=limits.max_file_bytes).manifest
    return BuiltBundle(data, digest, manifest, files, root, relative, warnings)
