"""`flowmetal bundle`: write the deterministic, validated archive of a script and what it loads."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from flowmetal_cli import console
from flowmetal_cli.bundle import BuiltBundle, build_bundle
from grid_local.errors import FlowmetalError


def _write(data: bytes, output: Path) -> None:
    """Write atomically: a half-written bundle never sits under the final name."""
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}-", dir=output.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def describe(built: BuiltBundle, output: str | None) -> dict[str, Any]:
    return {
        "digest": built.digest,
        "output": output,
        "entry": built.entry,
        "bytes": len(built.data),
        "prelude": built.manifest.get("prelude"),
        "settings": built.manifest.get("settings", {}),
        "files": [
            {"path": path, "sha256": built.manifest["files"][path], "bytes": len(text.encode("utf-8"))}
            for path, text in sorted(built.files.items())
        ],
        "warnings": [str(w) for w in built.warnings],
    }


def bundle(
    file: Annotated[Path, typer.Argument(help="The entry script (a .flow file).", show_default=False)],
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Where to write the archive ('-' for stdout). "
                                            "Default: <script name>.bundle in the current directory."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the digest and contents as JSON.")] = False,
) -> None:
    """Bundle a script and everything it loads into one deterministic archive.

    The bundle is validated first (every file parses and lints; loads resolve and stay inside
    the project; no symlink leaves it; files and the bundle are within [bundle] max_file_bytes
    and max_bundle_bytes of flowmetal.toml). The same sources always give the same digest.
    Lint findings are printed as warnings; any other problem is refused with exit code 2.

    Examples:

        flowmetal bundle main.flow

        flowmetal bundle main.flow -o dist/app.bundle --json
    """
    try:
        built = build_bundle(file)
    except FlowmetalError as exc:
        console.fail(str(exc), console.EXIT_USAGE)
    for warning in built.warnings:
        console.info(f"warning: {warning}")
    target = output or f"{Path(built.entry).stem}.bundle"
    try:
        if target == "-":
            sys.stdout.buffer.write(built.data)
            sys.stdout.buffer.flush()
        else:
            _write(built.data, Path(target))
    except OSError as exc:
        console.fail(f"cannot write {target}: {exc.strerror or exc}", console.EXIT_USAGE)
    summary = describe(built, None if target == "-" else target)
    if target == "-":  # stdout carries the archive: the summary goes to stderr
        console.info(built.digest)
        return
    if json_:
        console.print_json(summary)
        return
    typer.echo(built.digest)
    width = max(len(f["path"]) for f in summary["files"])
    for entry in summary["files"]:
        marker = "*" if entry["path"] == built.entry else " "
        typer.echo(f" {marker} {entry['path']:<{width}}  {entry['bytes']:>8} B  {entry['sha256'][:19]}")
    typer.echo(f"wrote {target} ({len(summary['files'])} files, {len(built.data)} bytes)")


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle)

