"""Scaffolding: every template is generated, checks clean, bundles, and runs on a MemoryGrid."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowmetal_cli.bundle import build_bundle
from flowmetal_cli.checker import check_paths
from flowmetal_cli.commands import new as scaffold
from flowmetal_cli.commands.new import ScaffoldError, create_project, list_templates, templates_root
from grid_local.runtime import journal
from grid_local.runtime.execution import Completed, Failed, Outcome, Suspended
from grid_local.runtime.execution import FlowTask
from grid_local.runtime.journal import JournalEntry
from grid_local.runtime.memory import MemoryGrid
from grid_local.runtime.sources import MappingSource

TEMPLATES = ["hello", "batch", "ci", "rest", "webhook"]


def test_the_five_templates_are_listed_hello_first() -> None:
    templates = list_templates()
    assert [t.name for t in templates] == TEMPLATES
    assert all(t.description for t in templates)


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_template_creates_a_project_that_checks_clean(template: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder, written = create_project("my-proj", template)
    assert folder == tmp_path / "my-proj"
    assert {"flowmetal.toml", "main.flow", "README.md"} <= set(written)
    assert any(path.startswith("lib/") and path.endswith(".star") for path in written)
    assert "{{name}}" not in "".join((folder / path).read_text() for path in written)
    assert "my-proj" in (folder / "flowmetal.toml").read_text()
    assert "//lib/" in (folder / "main.flow").read_text()
    report = check_paths([folder / "main.flow"])
    assert report.problems == [], [str(p) for p in report.problems]
    built = build_bundle(folder / "main.flow")
    assert built.entry == "main.flow" and any(path.startswith("lib/") for path in built.files)
    assert built.manifest["settings"]["project"]["name"] == "my-proj"


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a/b", "../up", "-x", "x" * 65, "naïve"])
def test_invalid_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="invalid project name"):
        create_project(name, "hello", parent=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_existing_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists"):
        create_project("proj", "hello", parent=tmp_path)
    assert [p.name for p in (tmp_path / "proj").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScaffoldError, match="already exists"):
        create_project("file", "hello", parent=tmp_path)


def test_existing_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    folder, _ = create_project("proj", "hello", parent=tmp_path)
    assert (folder / "main.flow").is_file()


def test_unknown_template_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="no template named 'nope'.*hello"):
        create_project("proj", "nope", parent=tmp_path)


def test_templates_are_found_in_the_installed_package_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "flowmetal_cli"
    (package / "_templates" / "only" / "lib").mkdir(parents=True)
    (package / "_templates" / "only" / "main.flow").write_text("x = 1\n")
    monkeypatch.setattr(scaffold.resources, "files", lambda name: package)
    assert Path(str(templates_root())) == package / "_templates"
    assert [t.name for t in list_templates()] == ["only"]


def test_templates_fall_back_to_the_source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scaffold.resources, "files", lambda name: tmp_path / "no-package")
    assert Path(str(templates_root())) == Path(__file__).resolve().parents[2] / "templates"


# -- running each template --------------------------------------------------------------------


def generated(template: str, tmp_path: Path) -> tuple[dict[str, str], str]:
    folder, _ = create_project("demo", template, parent=tmp_path)
    built = build_bundle(folder / "main.flow")
    return built.files, built.entry


def outputs(grid: MemoryGrid) -> list[str]:
    return [line for flow_id in grid.journals for line in grid.output(flow_id)]


def run(files: dict[str, str], args: dict[str, Any] | None = None, **kwargs: Any) -> tuple[MemoryGrid, Outcome]:
    grid = MemoryGrid(MappingSource(files), **kwargs)
    _, outcome = grid.run({"module": "main.flow", "function": None}, args or {})
    return grid, outcome


def test_hello_runs(tmp_path: Path) -> None:
    grid, outcome = run(*generated("hello", tmp_path)[:1])
    assert outcome == Completed(None)
    assert outputs(grid) == ["Hello from Flowmetal, tester!"]


def test_ci_reports_a_result_per_job(tmp_path: Path) -> None:
    """The pipeline's report and job choice (its containers run in tests/integration/test_templates_grid.py)."""
    files, _ = generated("ci", tmp_path)
    files["report.flow"] = """
load("//lib/pipeline.star", "chosen_jobs", "report")

if __name__ == "__flow__":
    checkout = {"repo": "/src/app", "ref": "", "revision": "0123456789abcdef"}
    r = report(checkout, [("lint", Ok({"exit_code": 1})), ("unit", Ok({"exit_code": 0})),
                          ("build", Err("docker.exec: sh timed out after 5 s"))])
    print(r["text"])
    print(json.encode({"status": r["status"], "failed": r["failed"], "jobs": r["jobs"]}))
    print(json.encode(chosen_jobs("all")), json.encode(chosen_jobs("unit, lint")))
    chosen_jobs("deploy")
"""
    grid = MemoryGrid(MappingSource(files))
    flow_id, outcome = grid.run({"module": "report.flow", "function": None})
    text, summary, chosen = grid.output(flow_id)
    assert text.splitlines() == ["/src/app @ HEAD (0123456789ab)", "  FAIL lint: exit code 1", "  PASS unit",
                                 "  FAIL build: docker.exec: sh timed out after 5 s"]
    assert json.loads(summary) == {"status": "failure", "failed": ["build", "lint"], "jobs": {
        "lint": {"ok": False, "error": "exit code 1", "exit_code": 1},
        "unit": {"ok": True, "error": None, "exit_code": 0},
        "build": {"ok": False, "error": "docker.exec: sh timed out after 5 s", "exit_code": None}}}
    assert chosen == '["build","lint","unit"] ["unit","lint"]'
    assert isinstance(outcome, Failed) and "unknown job 'deploy' (known: build, lint, unit)" in outcome.message


@dataclass
class FakeApis:
    """The source and target REST APIs, with a target that fails now and then."""

    items: list[dict[str, Any]]
    failures: dict[str, list[int]] = field(default_factory=dict)
    posted: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["method"] == "GET":
            return journal.ok({"status": 200, "headers": {"content-type": "application/json"},
                               "body": json.dumps(self.items), "json": self.items})
        key = request["headers"]["Idempotency-Key"]
        pending = self.failures.get(key, [])
        if pending:
            status = pending.pop(0)
            if status == 0:
                return journal.err("http: ConnectError: connection refused")
            return journal.ok({"status": status, "headers": {}, "body": "", "json": None})
        self.posted.append(request["json"])
        return journal.ok({"status": 201, "headers": {}, "body": "{}", "json": {"stored": True}})


def test_rest_copies_records_retrying_transient_failures(tmp_path: Path) -> None:
    files, _ = generated("rest", tmp_path)
    items = [{"id": n, "title": f"item {n}", "completed": n % 2 == 0} for n in range(1, 5)]
    apis = FakeApis(items, failures={"demo-2": [503, 0], "demo-3": [429]})
    grid, outcome = run(files, {"source_url": "http://127.0.0.1:1/items",
                                "target_url": "http://127.0.0.1:2/records", "limit": 3}, http=apis)
    assert outcome == Completed(None), outcome
    assert outputs(grid) == ["copied 3 of 3 records"]
    assert sorted(p["external_id"] for p in apis.posted) == ["1", "2", "3"]
    assert apis.posted[0] == {"external_id": "1", "title": "item 1", "done": False}
    backoffs = [[e.args["seconds"] for e in j if e.kind == "sleep"] for j in grid.journals.values()]
    assert sorted(b for b in backoffs if b) == [[0.5], [0.5, 1.0]]  # demo-3 retried once, demo-2 twice


def test_rest_fails_on_a_permanent_error(tmp_path: Path) -> None:
    files, _ = generated("rest", tmp_path)
    apis = FakeApis([{"id": 1, "title": "a"}, {"id": 2, "title": "b"}], failures={"demo-2": [400]})
    grid, outcome = run(files, {"source_url": "http://s/items", "target_url": "http://t/records"}, http=apis)
    assert isinstance(outcome, Failed)
    assert "1 of 2 records could not be copied" in outcome.message
    assert any("answered 400" in line for line in outputs(grid))


def test_batch_runs_in_bounded_groups(tmp_path: Path) -> None:
    files, _ = generated("batch", tmp_path)
    jobs = [{"id": f"j{n}", "n": n} for n in range(1, 8)] + [{"id": "bad", "fail": True}]
    grid, outcome = run(files, {"jobs": jobs, "parallelism": 3})
    assert outcome == Completed(None)
    lines = outputs(grid)
    assert "8 jobs: 7 ok, 1 failed" in lines
    assert any(line.startswith("  bad: ") and "asked to fail" in line for line in lines)
    assert [line for line in lines if line.endswith("jobs done")] == [
        "3 of 8 jobs done", "6 of 8 jobs done", "8 of 8 jobs done"]
    batch_id = next(i for i, name in grid.names.items() if name == "batch")
    kinds = [e.kind for e in grid.journals[batch_id]]
    # Never more than `parallelism` runs between two waits.
    groups = "".join("r" if k == "run" else "w" if k == "wait" else "" for k in kinds).split("w")
    assert [len(g) for g in groups if g] == [3, 3, 2]


def test_batch_defaults_and_string_arguments(tmp_path: Path) -> None:
    files, _ = generated("batch", tmp_path)
    grid, outcome = run(files, {"count": "4", "parallelism": "2"})
    assert outcome == Completed(None)
    assert "4 jobs: 4 ok, 0 failed" in outputs(grid)


class InboxGrid(MemoryGrid):
    """A MemoryGrid whose inboxes hold queued messages; an empty inbox times out."""

    def __init__(self, *args: Any, messages: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages = list(messages)

    def append(self, task: FlowTask, entry: JournalEntry) -> dict[str, Any] | None:
        if entry.kind == "receive" and entry.result is None:
            if self.messages:
                entry.result = journal.ok(self.messages.pop(0))
            elif entry.args.get("timeout") is not None:
                entry.result = journal.err(f"timeout: no message on inbox {entry.args['inbox']}")
        return super().append(task, entry)


def test_webhook_waits_for_a_message(tmp_path: Path) -> None:
    files, _ = generated("webhook", tmp_path)
    grid, outcome = run(files)
    assert isinstance(outcome, Suspended)  # nothing in the inbox: waiting in receive()
    assert outputs(grid) == ["demo listening on inbox _stdin of flow f1"]


def test_webhook_reacts_to_each_event_until_stopped(tmp_path: Path) -> None:
    files, _ = generated("webhook", tmp_path)
    notified: list[dict[str, Any]] = []

    def http(request: dict[str, Any]) -> dict[str, Any]:
        notified.append(request["json"])
        return journal.ok({"status": 204, "headers": {}, "body": "", "json": None})

    events = [{"type": "ping"}, {"type": "push", "repo": "acme/api", "ref": "v1"}, {"type": "other"},
              {"type": "stop"}, {"type": "ping"}]
    grid = InboxGrid(MappingSource(files), http=http, messages=events)
    _, outcome = grid.run({"module": "main.flow", "function": None}, {"notify_url": "http://127.0.0.1:9/hook"})
    assert outcome == Completed(None)
    assert outputs(grid) == [
        "demo listening on inbox _stdin of flow f1",
        "reply: pong",
        "build: build acme/api@v1",
        "ignore: no reaction to events of type 'other'",
        "stopping: asked to",
        "handled 3 events",
    ]
    assert [n["reaction"]["action"] for n in notified] == ["reply", "build"]
    assert grid.messages == [{"type": "ping"}]


def test_webhook_stops_when_idle(tmp_path: Path) -> None:
    files, _ = generated("webhook", tmp_path)
    grid = InboxGrid(MappingSource(files), messages=[{"type": "ping"}])
    _, outcome = grid.run({"module": "main.flow", "function": None}, {"idle_timeout": 5})
    assert outcome == Completed(None)
    assert outputs(grid)[-2:] == ["stopping: timeout: no message on inbox _stdin", "handled 1 events"]
