"""`flowmetal new`: scaffold a project from a template (hello, ci, webhook, rest, batch).

Templates live in the repository's ``templates/<name>/`` folder, which the wheel carries as
``flowmetal_cli/_templates``. Each holds ``flowmetal.toml``, ``main.flow`` (every template's entry
script has that name, so ``flowmetal run main.flow`` works in any new project), a ``lib/`` module
the flow loads with ``//lib/...``, and a ``README.md``. ``{{name}}`` in any file becomes the
project's name.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from grid_local.errors import FlowmetalError

DEFAULT_TEMPLATE = "hello"
ENTRY = "main.flow"
PLACEHOLDER = "{{name}}"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_SKIP = {"__pycache__", ".DS_Store"}


class ScaffoldError(FlowmetalError):
    """A project can't be created: bad name, unknown template, or the folder is in the way."""


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    root: Traversable


def templates_root() -> Traversable:
    """The templates folder: inside the installed package, else the source tree's ``templates/``."""
    try:
        packaged = resources.files("flowmetal_cli").joinpath("_templates")
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    source_tree = Path(__file__).resolve().parents[2] / "templates"
    if source_tree.is_dir():
        return source_tree
    raise ScaffoldError("no templates found (neither flowmetal_cli/_templates nor the source tree's templates/)")


def _description(folder: Traversable) -> str:
    try:
        settings: dict[str, Any] = tomllib.loads(folder.joinpath("flowmetal.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return str(settings.get("project", {}).get("description", ""))


def list_templates() -> list[Template]:
    root = templates_root()
    found = [
        Template(item.name, _description(item), item)
        for item in root.iterdir()
        if item.is_dir() and item.joinpath(ENTRY).is_file()
    ]
    return sorted(found, key=lambda t: (t.name != DEFAULT_TEMPLATE, t.name))


def _files(folder: Traversable, prefix: str = "") -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for item in sorted(folder.iterdir(), key=lambda i: i.name):
        if item.name in _SKIP or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            found += _files(item, f"{prefix}{item.name}/")
        else:
            found.append((prefix + item.name, item))
    return found


def create_project(name: str, template: str = DEFAULT_TEMPLATE, parent: Path | None = None) -> tuple[Path, list[str]]:
    """Create ``parent/name`` from ``template``; return the folder and the files written."""
    if not _NAME.match(name):
        raise ScaffoldError(
            f"invalid project name '{name}': start with a letter; use letters, digits, '-' and '_' (at most 64)"
        )
    templates = {t.name: t for t in list_templates()}
    if template not in templates:
        raise ScaffoldError(f"no template named '{template}' (available: {', '.join(templates)})")
    target = (parent or Path.cwd()) / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ScaffoldError(f"{target} already exists and is not an empty folder")
    written = []
    for relative, item in _files(templates[template].root):
        data = item.read_bytes()
        try:
            data = data.decode("utf-8").replace(PLACEHOLDER, name).encode("utf-8")
        except UnicodeDecodeError:
            pass  # a binary file is copied as it is
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)
        written.append(relative)
    return target, written


def new(
    name: Annotated[str, typer.Argument(help="Project name; the folder ./NAME is created.", show_default=False)] = "",
    template: Annotated[
        str, typer.Option("--template", "-t", help="Template to start from (see --list).")
    ] = DEFAULT_TEMPLATE,
    list_: Annotated[bool, typer.Option("--list", help="List the templates and exit.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Create a new Flowmetal project from a template.

    Every template makes NAME/ with flowmetal.toml, main.flow, a lib/ module it loads and a
    README.md.

    Examples:

        flowmetal new hello-world

        flowmetal new deploys --template ci

        flowmetal new --list
    """
    try:
        if list_:
            templates = list_templates()
            if json_:
                console.print_json([{"name": t.name, "description": t.description} for t in templates])
                return
            width = max(len(t.name) for t in templates)
            for t in templates:
                typer.echo(f"{t.name:<{width}}  {t.description}")
            return
        if not name:
            console.fail("missing NAME (try: flowmetal new my-project, or flowmetal new --list)", console.EXIT_USAGE)
        folder, written = create_project(name, template)
    except (FlowmetalError, OSError) as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    if json_:
        console.print_json({"path": str(folder), "template": template, "files": written})
        return
    typer.echo(f"created {name}/ from the {template} template:")
    for relative in written:
        typer.echo(f"  {relative}")
    typer.echo(f"\nnext:\n  cd {name}\n  flowmetal check {ENTRY}\n  flowmetal run --context=local {ENTRY}")


def register(app: typer.Typer) -> None:
    app.command("new")(new)
