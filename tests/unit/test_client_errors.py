"""How the grid client meets a remote's failures (respx): one message, one exit code, bounded retries.

The first half drives ``GridClient`` directly; the second runs the CLI in-process (CliRunner)
against a context whose URL respx answers, and checks that each failure is one line on stderr
with its documented exit code and no traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from flowmetal_cli import client as client_module
from flowmetal_cli.client import (
    RETRIES,
    BadRequest,
    ClientError,
    GridClient,
    GridUnreachable,
    NotFound,
    Refused,
)
from flowmetal_cli.main import app

URL = "http://grid.test"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's waits, recorded instead of slept."""
    waited: list[float] = []
    monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=waited.append, time=time.time))
    return waited


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def client() -> Iterator[GridClient]:
    with GridClient(URL, token="tok", context="staging") as grid:
        yield grid


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": "x", "message": message}, headers=headers)


# -- transport failures ----------------------------------------------------------------------


def test_connection_refused_is_unreachable(mock: respx.MockRouter, client: GridClient) -> None:
    route = mock.get("/v1/health").mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(GridUnreachable) as caught:
        client.health()
    assert caught.value.exit_code == 3
    assert str(caught.value) == f"cannot reach the grid of context 'staging' at {URL} (connection refused)"
    assert route.call_count == 1  # nothing listens: retrying would not help


def test_unknown_host_says_why(mock: respx.MockRouter, client: GridClient) -> None:
    mock.get("/v1/health").mock(side_effect=httpx.ConnectError("[Errno -2] Name or service not known"))
    with pytest.raises(GridUnreachable, match=r"\(\[Errno -2\] Name or service not known\)"):
        client.health()


def test_tls_error_is_unreachable_and_named(mock: respx.MockRouter, client: GridClient) -> None:
    mock.get("/v1/flows").mock(side_effect=httpx.ConnectError(
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"))
    with pytest.raises(GridUnreachable) as caught:
        client.list_flows()
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith(f"TLS error talking to context 'staging' at {URL}: [SSL: CERTIFICATE_VERIFY_FAILED]")


def test_timeouts_are_retried_for_get_then_unreachable(mock: respx.MockRouter, client: GridClient) -> None:
    route = mock.get("/v1/flows").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(GridUnreachable) as caught:
        client.list_flows()
    assert route.call_count == RETRIES
    assert caught.value.exit_code == 3
    assert str(caught.value) == f"the grid of context 'staging' at {URL} timed out"


def test_a_timeout_then_an_answer_succeeds(mock: respx.MockRouter, client: GridClient) -> None:
    route = mock.get("/v1/flows").mock(side_effect=[httpx.ConnectTimeout("slow"), httpx.Response(200, json=[])])
    assert client.list_flows() == []
    assert route.call_count == 2


def test_a_timed_out_start_is_not_repeated(mock: respx.MockRouter, client: GridClient) -> None:
    # The grid may have started the flow before the answer was lost: a second POST could start it twice.
    route = mock.post("/v1/flows").mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(GridUnreachable, match="timed out"):
        client.start_flow(DIGEST, {})
    assert route.call_count == 1


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "message", "expected"), [
    (401, "the token was refused", "context 'staging': the token was refused"),
    (401, "a bearer token is required", "context 'staging': the token was refused: a bearer token is required"),
    (403, "flow f1 is outside your quota node /other",
     "context 'staging': the token was refused here (permission denied): flow f1 is outside your quota node /other"),
])
def test_token_refused_names_the_context(mock: respx.MockRouter, client: GridClient, status: int, message: str,
                                         expected: str, sleeps: list[float]) -> None:
    route = mock.get("/v1/deployments").mock(return_value=error(status, message))
    with pytest.raises(Refused) as caught:
        client.deployments()
    assert caught.value.exit_code == 4 and caught.value.status == status
    assert str(caught.value) == expected
    assert route.call_count == 1 and sleeps == []


def test_404_is_not_found(mock: respx.MockRouter, client: GridClient) -> None:
    mock.get("/v1/flows/f1").mock(return_value=error(404, "no flow f1"))
    with pytest.raises(NotFound) as caught:
        client.get_flow("f1")
    # An unknown id is a usage error (2), not "the flow failed" (1).
    assert (caught.value.exit_code, caught.value.status, str(caught.value)) == (2, 404, "no flow f1")


def test_404_on_head_means_the_bundle_is_missing(mock: respx.MockRouter, client: GridClient) -> None:
    mock.head(f"/v1/bundles/{DIGEST}").mock(side_effect=[httpx.Response(404), httpx.Response(200)])
    assert client.has_bundle(DIGEST) is False
    assert client.has_bundle(DIGEST) is True


def test_409_is_a_conflict(mock: respx.MockRouter, client: GridClient) -> None:
    route = mock.post("/v1/flows/f1/cancel").mock(return_value=error(409, "flow f1 already completed"))
    with pytest.raises(ClientError) as caught:
        client.cancel("f1")
    assert type(caught.value) is ClientError
    assert (caught.value.exit_code, caught.value.status) == (1, 409)
    assert str(caught.value) == "conflict: flow f1 already completed"
    assert route.call_count == 1


def test_413_is_too_large(mock: respx.MockRouter, client: GridClient) -> None:
    mock.put(f"/v1/bundles/{DIGEST}").mock(return_value=error(413, "body over 16777216 bytes"))
    with pytest.raises(BadRequest) as caught:
        client.upload_bundle(b"PK", DIGEST)
    assert caught.value.exit_code == 2
    assert str(caught.value) == "too large for the grid: body over 16777216 bytes"


def test_422_is_a_bad_request(mock: respx.MockRouter, client: GridClient) -> None:
    mock.post("/v1/flows").mock(return_value=error(422, "args: not JSON"))
    with pytest.raises(BadRequest, match="args: not JSON"):
        client.start_flow(DIGEST, {})


def test_429_honours_retry_after(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    route = mock.post("/v1/flows").mock(side_effect=[
        error(429, "slow down", {"Retry-After": "2"}),
        httpx.Response(201, json={"id": "f1"}),
    ])
    assert client.start_flow(DIGEST, {})["id"] == "f1"
    assert sleeps == [2.0]
    assert route.call_count == 2  # a 429 was not processed: even a POST may be sent again


def test_429_retry_after_as_a_date_and_capped(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    mock.get("/v1/flows").mock(side_effect=[
        error(429, "later", {"Retry-After": formatdate(time.time() + 5, usegmt=True)}),
        error(429, "much later", {"Retry-After": "86400"}),
        httpx.Response(200, json=[]),
    ])
    assert client.list_flows() == []
    assert 3.0 <= sleeps[0] <= 5.0
    assert sleeps[1] == client_module.RETRY_AFTER_MAX


def test_429_until_the_end_is_refused(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    route = mock.get("/v1/flows").mock(return_value=error(429, "quota /acme exceeded", {"Retry-After": "0.01"}))
    with pytest.raises(Refused) as caught:
        client.list_flows()
    assert caught.value.exit_code == 4
    assert str(caught.value) == "context 'staging': quota exceeded: quota /acme exceeded"
    assert route.call_count == RETRIES and sleeps == [0.01] * (RETRIES - 1)


def test_5xx_retried_with_backoff_for_get(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    route = mock.get("/v1/flows").mock(side_effect=[httpx.Response(503), httpx.Response(502),
                                                     httpx.Response(200, json=[])])
    assert client.list_flows() == []
    assert route.call_count == 3
    assert sleeps == [client.retry_pause, client.retry_pause * 2]


def test_5xx_retried_for_put(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    route = mock.put("/v1/deployments/nightly").mock(side_effect=[error(500, "db busy"),
                                                                 httpx.Response(200, json={"name": "nightly"})])
    assert client.deploy("nightly", DIGEST) == {"name": "nightly"}
    assert route.call_count == 2 and len(sleeps) == 1


def test_5xx_not_retried_for_post(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    starts = mock.post("/v1/flows").mock(return_value=error(503, "overloaded"))
    messages = mock.post("/v1/flows/f1/messages").mock(return_value=error(500, "boom"))
    with pytest.raises(ClientError) as caught:
        client.start_flow(DIGEST, {})
    assert str(caught.value) == "the grid failed (503): overloaded" and caught.value.exit_code == 1
    with pytest.raises(ClientError, match=r"\(500\): boom"):
        client.send("f1", {"n": 1})
    assert starts.call_count == 1 and messages.call_count == 1 and sleeps == []


def test_5xx_bounded(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    route = mock.get("/v1/flows/f1").mock(return_value=httpx.Response(500, text="Internal Server Error"))
    with pytest.raises(ClientError, match=r"^the grid failed \(500\): Internal Server Error$"):
        client.get_flow("f1")
    assert route.call_count == RETRIES and len(sleeps) == RETRIES - 1


def test_an_html_error_page_becomes_one_short_line(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n" + "x" * 1000 + "\n</body></html>\n"
    mock.post("/v1/flows").mock(return_value=httpx.Response(502, text=page))
    with pytest.raises(ClientError) as caught:
        client.start_flow(DIGEST, {})
    message = str(caught.value)
    assert "\n" not in message and len(message) < 260
    assert message.startswith("the grid failed (502): <html> <head><title>502 Bad Gateway")


def test_a_non_json_answer_is_a_client_error(mock: respx.MockRouter, client: GridClient) -> None:
    mock.get("/v1/health").mock(return_value=httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(ClientError, match="something other than JSON"):
        client.health()


def test_upload_progress_and_resend_on_retry(mock: respx.MockRouter, client: GridClient, sleeps: list[float]) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: four chunks
    bodies: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(request.read())
        assert request.headers["content-length"] == str(len(data))
        assert "transfer-encoding" not in request.headers
        return httpx.Response(503) if len(bodies) == 1 else httpx.Response(201, json={"created": True})

    mock.put(f"/v1/bundles/{DIGEST}").mock(side_effect=answer)
    seen: list[tuple[int, int]] = []
    assert client.upload_bundle(data, DIGEST, progress=lambda sent, total: seen.append((sent, total))) == {"created": True}
    assert bodies == [data, data]
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [sent for sent, _ in seen].count(0) == 2  # the retry started over


# -- the same failures through the CLI -------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> Path:
    """A context 'staging' at the mocked URL, token from $STAGING_TOKEN; an isolated config."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLOWMETAL_CONTEXT", raising=False)
    monkeypatch.setenv("STAGING_TOKEN", "tok-secret")
    added = runner.invoke(app, ["context", "add", "staging", "--url", URL, "--token-env", "STAGING_TOKEN"])
    assert added.exit_code == 0, added.output
    return tmp_path


def one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "tok-secret" not in result.output
    return str(lines[0])


CASES: list[tuple[str, Any, int, str]] = [
    ("refused", httpx.ConnectError("[Errno 111] Connection refused"), 3, "(connection refused)"),
    ("tls", httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"), 3, "TLS error"),
    ("timeout", httpx.ReadTimeout("timed out"), 3, "timed out"),
    ("401", error(401, "the token was refused"), 4, "context 'staging': the token was refused"),
    ("403", error(403, "outside your quota node /other"), 4, "context 'staging': the token was refused"),
    ("404", error(404, "not found"), 2, "error: not found"),  # naming nothing the grid knows: usage
    ("409", error(409, "already cancelled"), 1, "conflict: already cancelled"),
    ("413", error(413, "too big"), 2, "too large for the grid"),
    ("429", error(429, "quota exceeded", {"Retry-After": "0"}), 4, "quota exceeded"),
    ("500", error(500, "database is locked"), 1, "the grid failed (500): database is locked"),
]


@pytest.mark.parametrize(("name", "answer", "code", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cli_turns_each_failure_into_one_line_and_its_exit_code(
    staging: Path, mock: respx.MockRouter, name: str, answer: Any, code: int, expected: str
) -> None:
    route = mock.get("/v1/flows")
    if isinstance(answer, Exception):
        route.mock(side_effect=answer)
    else:
        route.mock(return_value=answer)
    result = runner.invoke(app, ["ps", "--context", "staging"])
    line = one_line_error(result, code)
    assert expected in line
    assert route.calls[0].request.headers["authorization"] == "Bearer tok-secret"


def test_cli_push_uploads_then_skips_when_held(staging: Path, mock: respx.MockRouter) -> None:
    (staging / "flowmetal.toml").write_text('[project]\nname = "p"\n')
    (staging / "job.flow").write_text('if __name__ == "__flow__":\n    print("hi")\n')
    held: set[str] = set()

    def head(request: httpx.Request, digest: str) -> httpx.Response:
        return httpx.Response(200 if digest in held else 404)

    def put(request: httpx.Request, digest: str) -> httpx.Response:
        held.add(digest)
        return httpx.Response(201, json={"digest": digest, "created": True})

    mock.head(path__regex=r"/v1/bundles/(?P<digest>[^/]+)").mock(side_effect=head)
    uploads = mock.put(path__regex=r"/v1/bundles/(?P<digest>[^/]+)").mock(side_effect=put)
    deploys = mock.put("/v1/deployments/job").mock(side_effect=lambda request: httpx.Response(
        200, json={"name": "job", "digest": json.loads(request.content)["digest"], "quota": "/acme/ci"}))

    first = runner.invoke(app, ["push", "--context", "staging", "job.flow"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("uploaded sha256:")
    assert "deployed job -> sha256:" in first.stdout and "quota /acme/ci" in first.stdout
    again = runner.invoke(app, ["push", "--context", "staging", "job.flow", "--json"])
    assert again.exit_code == 0, again.output
    assert '"uploaded": false' in again.stdout
    assert uploads.call_count == 1 and deploys.call_count == 2


def test_cli_push_too_large_exits_two(staging: Path, mock: respx.MockRouter) -> None:
    (staging / "job.flow").write_text('print("hi")\n')
    mock.head(path__startswith="/v1/bundles/").mock(return_value=httpx.Response(404))
    mock.put(path__startswith="/v1/bundles/").mock(return_value=error(413, "bundle is too big"))
    line = one_line_error(runner.invoke(app, ["push", "--context", "staging", "job.flow"]), 2)
    assert line == "error: too large for the grid: bundle is too big"


def test_cli_start_unknown_deployment_exits_two(staging: Path, mock: respx.MockRouter) -> None:
    """Naming a deployment the grid does not know is a usage error, like an unknown flow id."""
    route = mock.post("/v1/deployments/nope/start").mock(return_value=error(404, "no deployment named 'nope'"))
    line = one_line_error(runner.invoke(app, ["start", "--context", "staging", "nope"]), 2)
    assert line == "error: no deployment named 'nope'"
    assert route.call_count == 1


def test_cli_missing_token_variable_exits_two(staging: Path, mock: respx.MockRouter,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGING_TOKEN")
    route = mock.get("/v1/deployments")
    line = one_line_error(runner.invoke(app, ["deployments", "--context", "staging"]), 2)
    assert "STAGING_TOKEN" in line and route.call_count == 0
