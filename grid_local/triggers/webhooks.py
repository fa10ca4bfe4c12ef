"""What a webhook hands a flow: the request as plain JSON data, and the key that routes it to an inbox."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

MAX_BODY = 1024 * 1024
"""Largest webhook body accepted (bytes); larger ones are refused with 413 before anything is written."""
_HOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SOURCES = ("json", "header", "query")
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
"""Never copied into a flow's arguments (and so never into its journal)."""


def check_hook_name(name: str) -> str | None:
    """None when ``name`` is a valid hook (or schedule) name, else the problem."""
    if _HOOK_NAME.match(name):
        return None
    return (f"invalid name '{name}': use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 128 characters)")


def parse_match(spec: str) -> tuple[str, str]:
    """``ARG=SOURCE`` (``pr=json:pull_request.number``, ``ref=header:X-Ref``, ``id=query:id``) as
    (argument name, source); raises ValueError with the problem."""
    arg, sep, source = spec.partition("=")
    arg, source = arg.strip(), source.strip()
    if not sep or not _ARG_NAME.match(arg):
        raise ValueError(f"'{spec}' is not ARG=SOURCE (for example pr=json:pull_request.number)")
    kind, sep, path = source.partition(":")
    if not sep or kind not in _SOURCES or not path:
        raise ValueError(f"'{source}' is not json:PATH, header:NAME or query:NAME")
    return arg, source


def flow_request(hook: str, delivery: str | None, method: str, path: str, headers: Iterable[tuple[str, str]],
                 query: Iterable[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """The request as a flow sees it: method, path, headers (lower-case names), query, body text and
    its decoded JSON (None when the body is not JSON)."""
    text = body.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(text) if text.strip() else None
    except ValueError:
        decoded = None
    return {
        "hook": hook, "delivery": delivery, "method": method, "path": path,
        "headers": {k.lower(): v for k, v in headers if k.lower() not in DROPPED_HEADERS},
        "query": dict(query), "body": text, "json": decoded,
    }


def match_value(source: str, request: Mapping[str, Any]) -> str | None:
    """The routing key a request carries at ``source`` (as text), or None when it has none."""
    kind, _, path = source.partition(":")
    if kind == "header":
        value: Any = request["headers"].get(path.lower())
    elif kind == "query":
        value = request["query"].get(path)
    else:
        value = request["json"]
        for part in path.split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
