"""The bundler: determinism, and every refusal naming its file and line."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

from flowmetal_cli.bundle import build_bundle
from grid_local import bundle_format
from grid_local.errors import BundleError, LoadError, ScriptError

MAIN = """\
load("pkg.flowmetal.io/prelude/v1", "flow", "FlowContext")
load("//lib/util.star", "shout")
load("./lib/more.star", "twice")

def _hello_impl(fctx: FlowContext) -> str:
    return shout(twice(fctx.quota.username))

hello = flow(implementation = _hello_impl)

if __name__ == "__flow__":
    print(hello())
"""
UTIL = 'load("./more.star", "twice")\n\ndef shout(s: str) -> str:\n    return twice(s).upper()\n'
MORE = 'def twice(s: str) -> str:\n    return s + s\n'


def make_project(root: Path, settings: str = "") -> Path:
    files = {
        "flowmetal.toml": '[project]\nname = "demo"\n' + settings,
        "main.flow": MAIN,
        "lib/util.star": UTIL,
        "lib/more.star": MORE,
        "lib/unused.star": "x = 1\n",  # not loaded: not bundled
    }
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root / "main.flow"


def write(root: Path, path: str, text: str) -> Path:
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(textwrap.dedent(text), encoding="utf-8")
    return full


def test_bundle_holds_the_load_graph_and_settings(tmp_path: Path) -> None:
    entry = make_project(tmp_path / "p", "[bundle]\nmax_file_bytes = 5000\n")
    built = build_bundle(entry)
    assert built.digest == bundle_format.digest_of(built.data)
    assert built.entry == "main.flow"
    assert sorted(built.files) == ["lib/more.star", "lib/util.star", "main.flow"]
    assert built.root == (tmp_path / "p").resolve()
    assert built.manifest["settings"] == {"project": {"name": "demo"}, "bundle": {"max_file_bytes": 5000}}
    assert built.manifest["prelude"] == "v1"
    opened = bundle_format.read_bundle(built.data, built.digest)
    assert opened.files == built.files and opened.entry == "main.flow"


def test_same_sources_same_digest_whatever_times_order_umask_or_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_bundle(make_project(tmp_path / "a"))
    for path in (tmp_path / "a").rglob("*"):
        os.utime(path, (1_000_000_000, 1_234_567_890))
    (tmp_path / "a" / "lib" / "util.star").touch()
    assert build_bundle(tmp_path / "a" / "main.flow").data == first.data

    old = os.umask(0o077)
    try:
        copied = shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "deeper" / "b")
    finally:
        os.umask(old)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert build_bundle(Path("deeper/b/main.flow")).digest == first.digest
    monkeypatch.chdir(copied / "lib")
    assert build_bundle(Path("../main.flow")).digest == first.digest


def test_crlf_sources_bundle_like_lf(tmp_path: Path) -> None:
    first = build_bundle(make_project(tmp_path / "a"))
    entry = make_project(tmp_path / "b")
    entry.write_bytes(MAIN.replace("\n", "\r\n").encode())
    assert build_bundle(entry).digest == first.digest


def test_a_change_changes_the_digest(tmp_path: Path) -> None:
    entry = make_project(tmp_path / "p")
    first = build_bundle(entry)
    (tmp_path / "p" / "lib" / "more.star").write_text(MORE + "\n# changed\n")
    assert build_bundle(entry).digest != first.digest


def test_project_root_without_flowmetal_toml_is_the_entry_folder(tmp_path: Path) -> None:
    entry = write(tmp_path, "solo.flow", 'print("hi")\n')
    built = build_bundle(entry)
    assert built.entry == "solo.flow" and built.manifest["settings"] == {}


def test_lint_findings_are_warnings_not_refusals(tmp_path: Path) -> None:
    entry = write(tmp_path, "main.flow", "def f():\n    unused = 1\n")
    built = build_bundle(entry)
    assert any("unused-assign" in str(w) and ":2:" in str(w) for w in built.warnings)


def test_syntax_error_is_refused_with_file_line_col(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path / "p")
    write(tmp_path / "p", "lib/more.star", "def twice(s:\n")
    with pytest.raises(ScriptError) as caught:
        build_bundle(Path("p/main.flow"))
    assert str(caught.value).startswith("p/lib/more.star:1:")
    assert "Parse error" in str(caught.value)


def test_escaping_load_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "outside.star", "x = 1\n")
    write(tmp_path / "p", "flowmetal.toml", "")
    write(tmp_path / "p", "main.flow", '# comment\nload("../outside.star", "x")\n')
    with pytest.raises(LoadError) as caught:
        build_bundle(Path("p/main.flow"))
    assert str(caught.value) == "p/main.flow:2: cannot load '../outside.star': it leaves the project root"


def test_absolute_looking_load_is_refused(tmp_path: Path) -> None:
    entry = write(tmp_path, "main.flow", 'load("/etc/x.star", "x")\n')
    with pytest.raises(LoadError, match="main.flow:1: cannot load '/etc/x.star'"):
        build_bundle(entry)


def test_missing_load_is_refused_at_the_loading_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "lib/a.star", '\n\nload("./gone.star", "g")\n')
    write(tmp_path, "main.flow", 'load("//lib/a.star", "a")\n')
    with pytest.raises(LoadError) as caught:
        build_bundle(Path("main.flow"))
    assert str(caught.value) == "lib/a.star:3: file not found: lib/gone.star"


def test_load_cycle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "a.star", 'load("//b.star", "b")\na = 1\n')
    write(tmp_path, "b.star", 'load("//a.star", "a")\nb = 1\n')
    write(tmp_path, "main.flow", 'load("//a.star", "a")\n')
    with pytest.raises(LoadError) as caught:
        build_bundle(Path("main.flow"))
    assert str(caught.value) == "b.star:1: load cycle: a.star -> b.star -> a.star"


def test_oversize_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flowmetal.toml", "[bundle]\nmax_file_bytes = 200\n")
    write(tmp_path, "big.star", "x = 1\n" * 100)
    write(tmp_path, "main.flow", '\nload("//big.star", "x")\n')
    with pytest.raises(BundleError) as caught:
        build_bundle(Path("main.flow"))
    assert str(caught.value) == (
        "main.flow:2: big.star is 600 bytes, over the limit of 200 ([bundle] max_file_bytes in flowmetal.toml)"
    )


def test_oversize_entry_is_refused_at_its_first_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flowmetal.toml", "[bundle]\nmax_file_bytes = 10\n")
    write(tmp_path, "main.flow", "x = 1\n" * 10)
    with pytest.raises(BundleError, match=r"^main\.flow:1: main\.flow is 60 bytes, over the limit of 10"):
        build_bundle(Path("main.flow"))


def test_oversize_bundle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flowmetal.toml", "[bundle]\nmax_bundle_bytes = 1000\n")
    write(tmp_path, "a.star", "a = 1\n" * 100)
    write(tmp_path, "b.star", "b = 1\n" * 100)
    write(tmp_path, "main.flow", 'load("//a.star", "a")\nload("//b.star", "b")\n')
    with pytest.raises(BundleError) as caught:
        build_bundle(Path("main.flow"))
    assert str(caught.value).startswith("main.flow:2: the bundle grows over the limit of 1000 bytes with b.star")


def test_oversize_archive_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The files alone fit; the manifest and zip headers push the archive over.
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flowmetal.toml", "[bundle]\nmax_bundle_bytes = 400\n")
    write(tmp_path, "main.flow", "x = 1\n" * 50)
    with pytest.raises(BundleError, match=r"^main\.flow:1: the bundle is \d+ bytes, over the limit of 400"):
        build_bundle(Path("main.flow"))


def test_symlink_leaving_the_project_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "secret.star", "token = 'x'\n")
    write(tmp_path / "p", "flowmetal.toml", "")
    write(tmp_path / "p", "main.flow", 'load("//lib/s.star", "token")\n')
    (tmp_path / "p" / "lib").mkdir()
    (tmp_path / "p" / "lib" / "s.star").symlink_to(tmp_path / "secret.star")
    with pytest.raises(BundleError) as caught:
        build_bundle(Path("p/main.flow"))
    assert str(caught.value).startswith("p/main.flow:1: lib/s.star is a symlink leaving the project")


def test_symlinked_folder_leaving_the_project_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "shared/s.star", "s = 1\n")
    write(tmp_path / "p", "flowmetal.toml", "")
    write(tmp_path / "p", "main.flow", 'load("//vendor/s.star", "s")\n')
    (tmp_path / "p" / "vendor").symlink_to(tmp_path / "shared")
    with pytest.raises(BundleError, match="vendor/s.star is a symlink leaving the project"):
        build_bundle(tmp_path / "p" / "main.flow")


def test_symlink_inside_the_project_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "flowmetal.toml", "")
    write(tmp_path, "lib/real.star", "s = 1\n")
    (tmp_path / "lib" / "alias.star").symlink_to(tmp_path / "lib" / "real.star")
    write(tmp_path, "main.flow", 'load("//lib/alias.star", "s")\nprint(s)\n')
    assert build_bundle(tmp_path / "main.flow").files["lib/alias.star"] == "s = 1\n"


def test_bad_entries_and_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such file"):
        build_bundle(tmp_path / "nope.flow")
    write(tmp_path, "notes.txt", "hi")
    with pytest.raises(BundleError, match=r"ends in \.flow"):
        build_bundle(tmp_path / "notes.txt")
    write(tmp_path, "main.flow", "x = 1\n")
    write(tmp_path, "flowmetal.toml", "[bundle]\nmax_file_bytes = -1\n")
    with pytest.raises(BundleError, match="max_file_bytes must be a positive integer"):
        build_bundle(tmp_path / "main.flow")
    write(tmp_path, "flowmetal.toml", "[project]\nname = \n")
    with pytest.raises(BundleError, match=r"flowmetal\.toml:2:\d+: invalid TOML"):
        build_bundle(tmp_path / "main.flow")


def test_toml_dates_become_iso_strings(tmp_path: Path) -> None:
    write(tmp_path, "flowmetal.toml", "[project]\nsince = 2024-05-01\n")
    entry = write(tmp_path, "main.flow", "x = 1\n")
    assert build_bundle(entry).manifest["settings"] == {"project": {"since": "2024-05-01"}}
