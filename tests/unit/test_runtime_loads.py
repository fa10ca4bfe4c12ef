"""load(): project paths, relative paths, built-in libraries, and refused loads (static graph and evaluation)."""

from __future__ import annotations

import pytest

from grid_local.errors import LoadError, SourceLocation
from grid_local.runtime import sources
from grid_local.runtime.execution import Completed, Failed
from grid_local.runtime.sources import DirectorySource, LoadEdge, find_project_root, load_graph

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def layered(flow_project):
    """flows/main.flow loads //lib, ../lib, ./ and the built-ins; lib/a.star loads a sibling."""
    flow_project.write("flows/main.flow", """
        load("//lib/a.star", "A")
        load("../lib/b.star", "B")
        load("./helpers.star", "H")
        load("pkg.flowmetal.io/v1/prelude", "Ok")
        load("pkg.flowmetal.io/http/v1", "get")

        if __name__ == "__flow__":
            print(A, B, H, Ok(1).value, str(get))
    """)
    flow_project.write("flows/helpers.star", 'H = "h"\n')
    flow_project.write("lib/a.star", """
        load("./b.star", "B")
        A = "a+" + B
    """)
    flow_project.write("lib/b.star", 'B = "b"\n')
    return flow_project


def test_find_project_root_is_the_nearest_folder_with_flowmetal_toml(tmp_path):
    outer = tmp_path / "outer"
    inner = outer / "inner"
    (inner / "flows" / "deep").mkdir(parents=True)
    (outer / "flowmetal.toml").write_text("")
    assert find_project_root(inner / "flows" / "deep" / "x.flow") == outer
    (inner / "flowmetal.toml").write_text("")
    assert find_project_root(inner / "flows" / "deep" / "x.flow") == inner


def test_find_project_root_without_project_file_is_the_entry_folder(tmp_path):
    (tmp_path / "solo").mkdir()
    entry = tmp_path / "solo" / "x.flow"
    entry.write_text("")
    if any((p / "flowmetal.toml").is_file() for p in tmp_path.parents):
        pytest.skip("a flowmetal.toml above tmp_path")
    assert find_project_root(entry) == tmp_path / "solo"


def test_static_graph_resolves_root_relative_and_builtin_loads(layered):
    root = find_project_root(layered.root / "flows" / "main.flow")
    assert root == layered.root

    graph = load_graph(DirectorySource(root), "flows/main.flow")

    assert graph == {
        "flows/main.flow": [
            LoadEdge("//lib/a.star", "lib/a.star", 1),
            LoadEdge("../lib/b.star", "lib/b.star", 2),
            LoadEdge("./helpers.star", "flows/helpers.star", 3),
            LoadEdge("pkg.flowmetal.io/v1/prelude", "pkg.flowmetal.io/v1/prelude", 4),
            LoadEdge("pkg.flowmetal.io/http/v1", "pkg.flowmetal.io/http/v1", 5),
        ],
        "lib/a.star": [LoadEdge("./b.star", "lib/b.star", 1)],
        "lib/b.star": [],
        "flows/helpers.star": [],
    }


def test_evaluation_resolves_the_same_loads(layered):
    grid, root, outcome = layered.run("flows/main.flow")

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["a+b b h 1 http.star.get"]


def test_prelude_alias_and_canonical_name_are_the_same_library(flow_project):
    flow_project.write("main.flow", """
        load("pkg.flowmetal.io/v1/prelude", alias_ok = "Ok")
        load("pkg.flowmetal.io/prelude/v1", canon_ok = "Ok")
        print(alias_ok(1) == canon_ok(1), str(alias_ok))
    """)

    grid, root, outcome = flow_project.run()

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["True prelude.star.Ok"]


def test_http_library_goes_through_the_journal(flow_project):
    seen = []

    def http(request):
        seen.append(request)
        return {"ok": True, "value": {"status": 201, "headers": {}, "body": "{}", "json": {"id": 7}}, "error": None}

    flow_project.write("main.flow", """
        load("pkg.flowmetal.io/http/v1", "post")
        r = post("https://example.test/items", json = {"name": "x"})
        print(r.status, r.json["id"])
    """)

    grid, root, outcome = flow_project.run(http=http)

    assert outcome == Completed(None), outcome
    assert grid.output(root) == ["201 7"]
    assert [e.kind for e in grid.journals[root]] == ["http", "print"]
    assert seen == [{"method": "POST", "url": "https://example.test/items", "headers": {}, "body": None,
                     "json": {"name": "x"}, "timeout": 30}]


def test_unknown_builtin_library_is_refused(flow_project):
    flow_project.write("main.flow", """
        x = 1
        load("pkg.flowmetal.io/nope/v1", "y")
    """)

    with pytest.raises(LoadError) as caught:
        load_graph(DirectorySource(flow_project.root), "main.flow")
    assert caught.value.location == SourceLocation("main.flow", 2)
    assert "unknown built-in library 'pkg.flowmetal.io/nope/v1'" in caught.value.message

    _, _, outcome = flow_project.run()
    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("main.flow:2: unknown built-in library 'pkg.flowmetal.io/nope/v1'")


# -- refused loads: (files, entry, expected location, message fragment) -----------------------------

REFUSED = {
    "escape-from-root": (
        {"main.flow": 'x = 1\nload("../../x.star", "X")\n'},
        "main.flow", SourceLocation("main.flow", 2), "cannot load '../../x.star': it leaves the project root",
    ),
    "escape-via-double-slash": (
        {"main.flow": 'load("//../x.star", "X")\n'},
        "main.flow", SourceLocation("main.flow", 1), "cannot load '//../x.star': it leaves the project root",
    ),
    "escape-from-a-subfolder": (
        {"main.flow": 'load("//lib/a.star", "A")\n', "lib/a.star": '# a\n# b\nload("../../outside.star", "X")\nA = 1\n'},
        "main.flow", SourceLocation("lib/a.star", 3), "cannot load '../../outside.star': it leaves the project root",
    ),
    "missing-file": (
        {"main.flow": 'x = 1\nload("//nope.star", "X")\n'},
        "main.flow", SourceLocation("main.flow", 2), "file not found: nope.star",
    ),
    "missing-file-in-a-library": (
        {"main.flow": 'load("//lib/a.star", "A")\n', "lib/a.star": '# a\nload("./zz.star", "Z")\nA = 1\n'},
        "main.flow", SourceLocation("lib/a.star", 2), "file not found: lib/zz.star",
    ),
    "bare-path": (
        {"main.flow": 'load("x.star", "X")\n'},
        "main.flow", SourceLocation("main.flow", 1), "cannot load 'x.star': use '//path' from the project root",
    ),
    "not-a-script": (
        {"main.flow": 'load("//data.json", "X")\n', "data.json": "{}"},
        "main.flow", SourceLocation("main.flow", 1), "only .star and .flow files can be loaded",
    ),
    "cycle": (
        {"main.flow": 'load("//a.star", "A")\n', "a.star": '# a\nload("./b.star", "B")\nA = 1\n',
         "b.star": 'load("./a.star", "A")\nB = 1\n'},
        "main.flow", SourceLocation("b.star", 1), "load cycle: a.star -> b.star -> a.star",
    ),
    "cycle-through-the-entry": (
        {"main.flow": 'load("//a.star", "A")\n', "a.star": '# a\nload("//main.flow", "M")\nA = 1\n'},
        "main.flow", SourceLocation("a.star", 2), "load cycle: main.flow -> a.star -> main.flow",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_load_static(flow_project, case):
    files, entry, location, fragment = REFUSED[case]
    for path, source in files.items():
        flow_project.write(path, source)

    with pytest.raises(LoadError) as caught:
        load_graph(DirectorySource(flow_project.root), entry)

    assert caught.value.location == location
    assert fragment in caught.value.message
    assert str(caught.value).startswith(f"{location}: ")


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_load_evaluated(flow_project, case):
    files, entry, location, fragment = REFUSED[case]
    for path, source in files.items():
        flow_project.write(path, source)

    grid, root, outcome = flow_project.run(entry)

    assert isinstance(outcome, Failed), outcome
    assert outcome.kind == "LoadError"
    assert outcome.message.startswith(f"{location}: ")
    assert fragment in outcome.message
    assert "internal error" not in outcome.message
    assert grid.journals[root] == []  # nothing ran


def test_escaping_load_does_not_read_outside_the_root(tmp_path, flow_project):
    """A file that exists just outside the project is still refused, not loaded."""
    (tmp_path / "outside.star").write_text('X = "leaked"\n')
    flow_project.write("main.flow", 'load("../outside.star", "X")\nprint(X)\n')

    grid, root, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert "leaves the project root" in outcome.message
    assert grid.output(root) == []


def test_error_inside_a_loaded_library_names_the_library(flow_project):
    flow_project.write("main.flow", 'load("//lib/a.star", "A")\n')
    flow_project.write("lib/a.star", "B = 1\nA = nope\n")

    _, _, outcome = flow_project.run()

    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("lib/a.star:2:5: Variable `nope` not found")
    assert "internal error" not in outcome.message


def test_syntax_error_inside_a_loaded_library_names_the_library(flow_project):
    flow_project.write("main.flow", 'load("//lib/a.star", "A")\n')
    flow_project.write("lib/a.star", "B = 1\nA = [1,\nC = 2\n")

    with pytest.raises(Exception) as caught:
        load_graph(DirectorySource(flow_project.root), "main.flow")
    assert str(caught.value).startswith("lib/a.star:3:3: Parse error")

    _, _, outcome = flow_project.run()
    assert isinstance(outcome, Failed)
    assert outcome.message.startswith("lib/a.star:3:3: Parse error")


def test_resolve_load_rules():
    assert sources.resolve_load("flows/x.flow", "./y.star") == "flows/y.star"
    assert sources.resolve_load("flows/x.flow", "../lib/y.star") == "lib/y.star"
    assert sources.resolve_load("flows/x.flow", "//lib/./z/../y.star") == "lib/y.star"
    assert sources.resolve_load("a/b/c.star", "../../d.star") == "d.star"
    for escaping in ["../../../d.star", "//../d.star", "///etc/x.star"]:
        with pytest.raises(LoadError):
            sources.resolve_load("a/b/c.star", escaping)
