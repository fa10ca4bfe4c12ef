"""Webhook signatures and routing keys: the pure parts of a delivery."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from starlette.datastructures import Headers

from grid_local.triggers import signatures, webhooks

BODY = b'{"action": "opened", "pull_request": {"number": 42, "merged": true}}'


def github_headers(value: str) -> Headers:
    return Headers({"X-Hub-Signature-256": value})


def test_a_good_github_signature_passes() -> None:
    value = "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    assert signatures.sign("s3cret", BODY) == value
    assert signatures.signature_problem("github", "s3cret", BODY, github_headers(value)) is None
    assert signatures.signature_problem("github", "s3cret", BODY, github_headers(value.upper().replace("SHA256=", "sha256="))) is None


@pytest.mark.parametrize("value, reason", [
    (signatures.sign("other", BODY), "does not match"),
    (signatures.sign("s3cret", BODY + b" "), "does not match"),
    (signatures.sign("s3cret", BODY)[len("sha256="):], "must read sha256="),
    ("sha256=", "does not match"),
])
def test_a_bad_github_signature_is_refused(value: str, reason: str) -> None:
    problem = signatures.signature_problem("github", "s3cret", BODY, github_headers(value))
    assert problem is not None and reason in problem


def test_a_missing_signature_is_refused_and_names_the_header() -> None:
    assert signatures.signature_problem("github", "s3cret", BODY, Headers({})) == "missing signature header X-Hub-Signature-256"
    assert "X-Signature-256" in (signatures.signature_problem("hmac-sha256", "s3cret", BODY, Headers({})) or "")


def test_the_generic_scheme_takes_a_bare_hex_digest_too() -> None:
    digest = hmac.new(b"k", BODY, hashlib.sha256).hexdigest()
    assert signatures.signature_problem("hmac-sha256", "k", BODY, Headers({"x-signature-256": digest})) is None
    assert signatures.signature_problem("hmac-sha256", "k", BODY, Headers({"x-signature-256": "sha256=" + digest})) is None
    assert signatures.signature_problem("hmac-sha256", "k", BODY, Headers({"x-signature-256": digest[:-1] + "0"})) is not None


def test_an_unsigned_hook_takes_anything() -> None:
    assert signatures.signature_problem("none", None, BODY, Headers({})) is None


def test_the_delivery_id_comes_from_github_or_an_idempotency_key() -> None:
    assert signatures.delivery_id(Headers({"X-GitHub-Delivery": "d-1", "Idempotency-Key": "k"})) == "d-1"
    assert signatures.delivery_id(Headers({"idempotency-key": " k-2 "})) == "k-2"
    assert signatures.delivery_id(Headers({})) is None


def test_the_flow_sees_the_request_without_credentials() -> None:
    request = webhooks.flow_request("h", "d", "POST", "/hooks/h",
                                    [("content-type", "application/json"), ("authorization", "Bearer t"), ("cookie", "c")],
                                    [("ref", "main")], BODY)
    assert request["json"]["pull_request"]["number"] == 42
    assert request["headers"] == {"content-type": "application/json"}
    assert request["query"] == {"ref": "main"} and request["body"] == BODY.decode()
    assert webhooks.flow_request("h", None, "POST", "/", [], [], b"not json")["json"] is None


@pytest.mark.parametrize("source, expected", [
    ("json:pull_request.number", "42"), ("json:pull_request.merged", "true"), ("json:pull_request", None),
    ("json:missing.deeper", None), ("header:X-Ref", "main"), ("query:id", "7"), ("query:none", None),
])
def test_routing_keys(source: str, expected: str | None) -> None:
    request = webhooks.flow_request("h", None, "POST", "/", [("x-ref", "main")], [("id", "7")], BODY)
    assert webhooks.match_value(source, request) == expected


@pytest.mark.parametrize("spec", ["pr", "pr=", "=json:a", "pr=body:a", "pr=json:", "9x=json:a"])
def test_bad_match_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        webhooks.parse_match(spec)


def test_names() -> None:
    assert webhooks.check_hook_name("gh-push.v2") is None
    assert webhooks.check_hook_name("-x") is not None and webhooks.check_hook_name("a/b") is not None
