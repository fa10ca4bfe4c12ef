"""The docs can be trusted: examples parse (and the tutorial's files check clean), every prelude
export, action, library function and environment variable is documented, links resolve, and the
generated references (CLI, Client API endpoints) are current."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from flowmetal_cli import analysis, docgen
from flowmetal_cli.checker import check_paths
from grid_local.errors import ScriptError
from grid_local.runtime import dialect, sources
from tests.helpers import write_file

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def pages() -> list[Path]:
    return sorted(DOCS.glob("**/*.md"))


def code_blocks(page: Path, lang: str = "python") -> list[tuple[int, str]]:
    """``(line of the block's first line, text)`` of every fenced block in ``lang``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start("body")) + 1, m["body"]) for m in _FENCE.finditer(text) if m["lang"] == lang]


def headings(page: Path) -> str:
    return "\n".join(line for line in page.read_text(encoding="utf-8").splitlines() if line.startswith("#"))


def test_every_python_example_parses_with_the_dialect() -> None:
    checked = 0
    for page in pages():
        for line, body in code_blocks(page):
            try:
                dialect.parse(f"{page.relative_to(ROOT)}:{line}", body)
            except ScriptError as exc:
                pytest.fail(f"{page.relative_to(ROOT)}, block at line {line}: {exc}")
            checked += 1
    assert checked >= 12, "the docs lost their examples"


def test_the_tutorial_files_check_clean_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_file(tmp_path, "flowmetal.toml", '[project]\nname = "shop"\n')
    steps = [(line, body) for line, body in code_blocks(DOCS / "tutorial.md") if body.startswith("# file: ")]
    assert len(steps) >= 4
    for line, body in steps:
        name = body.splitlines()[0].removeprefix("# file: ").strip()
        write_file(tmp_path, name, body)
        report = check_paths([Path(name)])
        assert report.problems == [], f"tutorial.md block at line {line}: {[str(p) for p in report.problems]}"
    final = (tmp_path / "main.flow").read_text()
    for needed in ("flow(", "retry(", "get(", ".receive(", "resources = ", "exec("):
        assert needed in final, f"the tutorial's flow no longer shows {needed}"


def _public_names(library: str) -> list[str]:
    tree = ast.parse(sources.builtin_source(library))
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    names += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    return [name for name in names if not name.startswith("_")]


def test_every_prelude_export_and_action_has_its_own_heading() -> None:
    documented = headings(DOCS / "prelude.md")
    exports = _public_names(dialect.PRELUDE_MODULE)
    assert set(dialect.PREDECLARED) <= set(exports)
    missing = [name for name in exports if f"`{name}`" not in documented]
    missing += [f"action {name}" for name in analysis.ACTIONS
                if f"`{name}`" not in documented and f"`actions.{name}`" not in documented]
    assert missing == []
    text = (DOCS / "prelude.md").read_text()
    assert [kind for kind in analysis.ARG_KINDS if f"`args.{kind}`" not in text] == []


def test_every_builtin_library_and_its_functions_are_documented() -> None:
    """Each library is listed in libraries.md; its exports there or on its own page (docs/<lib>.md)."""
    index = (DOCS / "libraries.md").read_text()
    for target, file in sources.BUILTIN_LIBRARIES.items():
        if file == "prelude.star":
            continue
        assert f"`{target}`" in index
        own_page = DOCS / file.replace(".star", ".md")
        text = index + (own_page.read_text() if own_page.exists() else "")
        assert [name for name in _public_names(target) if f"`{name}(" not in text and f"`{name}." not in text] == []


def test_every_environment_variable_the_tool_reads_is_documented() -> None:
    read = set()
    for folder in ("flowmetal_cli", "grid_local", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"\"(FLOWMETAL_[A-Z_]+|NO_COLOR|DOCKER_HOST)\"", path.read_text()))
    assert {"FLOWMETAL_HOME", "FLOWMETAL_CONFIG", "FLOWMETAL_CONTEXT", "NO_COLOR"} <= read
    text = (DOCS / "environment.md").read_text()
    assert sorted(name for name in read if f"`{name}`" not in text) == []


def test_links_between_pages_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", *pages()]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
    assert "docs/README.md" in (ROOT / "README.md").read_text()


def test_the_generated_references_are_current() -> None:
    stale = [path.name for path, text in docgen.pages().items() if path.read_text(encoding="utf-8") != text]
    assert stale == [], "run: python3 -m flowmetal_cli.docgen"


def test_every_command_has_help_and_an_example() -> None:
    found = docgen.commands()
    assert len(found) >= 20
    assert [c.name for c in found if not c.description] == []
    assert [c.name for c in found if not c.examples] == []
    assert [f"{c.name} {names}" for c in found for names, text in c.params if not text.strip()] == []
    assert all("flowmetal " in example for c in found for example in c.examples)


def _shell_commands(body: str) -> list[list[str]]:
    """The words of each command in a shell block (continuations joined, split at |, &&, ;)."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True  # split at blanks and |, &, ;, ( and ) only (URLs stay whole)
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("|", "||", "&&", ";", "&", "(", ")"):
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words = words[1:]  # VAR=value before the command
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


def test_every_flowmetal_command_in_the_docs_names_real_commands_and_options() -> None:
    import typer

    from flowmetal_cli.main import app

    root = typer.main.get_command(app)
    checked, bad = 0, []
    for page in [ROOT / "README.md", *pages()]:
        for lang in ("sh", "bash"):
            for line, body in code_blocks(page, lang):
                for words in _shell_commands(body):
                    if words[0] != "flowmetal" or "--help" in words or "--version" in words:
                        continue
                    command, rest = root, words[1:]
                    while rest and hasattr(command, "commands") and rest[0] in command.commands:
                        command, rest = command.commands[rest[0]], rest[1:]
                    where = f"{page.relative_to(ROOT)}:{line}: {' '.join(words)}"
                    if hasattr(command, "commands"):
                        bad.append(f"{where}: no such command")
                        continue
                    try:
                        command.make_context(" ".join(words[:1]), list(rest))
                    except Exception as exc:  # click's usage errors
                        if "does not exist" not in str(exc):  # a placeholder file name
                            bad.append(f"{where}: {exc}")
                    checked += 1
    assert bad == [], "\n".join(bad)
    assert checked >= 30
