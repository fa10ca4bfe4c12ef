"""Secret references, as flows hold them, and what connectors do with them (see db/secrets.py).

A flow's ``fctx.secrets.<alias>`` is the string ``{{flowmetal.secret:<name>}}``. A connector
substitutes the value for the reference as it performs a request, and masks every occurrence of
the value in the result (``***``) before it is recorded: the value itself and its common encodings
(base64 standard and URL-safe, padded or not, also where the value sits inside a longer encoded text
such as ``user:value``; percent-encoding; hex; a JSON string's escapes). Where an output limit cut
through one of those, the part left at the edge of the text is masked too.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

REFERENCE = re.compile(r"\{\{flowmetal\.secret:([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\}\}")
MASK = "***"
MIN_ENCODED = 6
"""An encoding of a value shorter than this is not masked (too likely to be ordinary text); the value
itself always is."""
KEY_ENV = "FLOWMETAL_SECRETS_KEY"
"""Where a grid may take its secrets key from (never handed on to the commands exec runs)."""


def reference(name: str) -> str:
    return "{{flowmetal.secret:" + name + "}}"


def substitute(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every reference replaced by its secret's value (strings, lists and dicts, deeply)."""
    if isinstance(value, str):
        return REFERENCE.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {substitute(k, values): substitute(v, values) for k, v in value.items()}
    return value


def _base64_forms(raw: bytes) -> set[str]:
    """The value's base64, standard and URL-safe, padded and not; and, for each of the three offsets the
    value can start at inside a longer text (``user:value`` for HTTP Basic), the run of characters that
    encode only the value's bytes (the characters at its edges mix in neighbouring bytes)."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        for skip in range(3):
            aligned = raw[skip:]
            forms.add(encode(aligned[: len(aligned) // 3 * 3]).decode())
    return forms


def _percent_forms(secret: str) -> set[str]:
    forms = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    return forms | {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in forms}


def encodings(secret: str) -> list[str]:
    """What ``mask`` replaces for one secret: the value and its common encodings, longest first."""
    if not secret:
        return []
    raw = secret.encode()
    forms = _base64_forms(raw) | _percent_forms(secret) | {raw.hex(), raw.hex().upper()}
    forms |= {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    kept = {f for f in forms if len(f) >= MIN_ENCODED} | {secret}
    return sorted(kept, key=lambda f: (-len(f), f))


def mask(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every occurrence of a secret's value, or of one of its encodings, replaced by
    ``***`` (before it is recorded)."""
    forms = sorted({f for secret in values.values() for f in encodings(secret)}, key=lambda f: (-len(f), f))
    return _masked(value, forms) if forms else value


def _spans(text: str, form: str) -> list[tuple[int, int]]:
    """Where ``form`` is in ``text``; and, since an output limit may have cut the text (a command's
    output keeps its last MiB, an HTTP body its first 8 MiB), the end of ``form`` at the text's start
    or its beginning at the text's end, when at least MIN_ENCODED characters of it are there."""
    found = []
    at = text.find(form)
    while at != -1:
        found.append((at, at + len(form)))
        at = text.find(form, at + 1)
    head, tail = text[:MIN_ENCODED], text[-MIN_ENCODED:]
    if len(head) < MIN_ENCODED:
        return found
    at = form.find(head, 1)  # the longest end of form that the text starts with (its first place)
    while at != -1:
        if text.startswith(form[at:]):
            found.append((0, len(form) - at))
            break
        at = form.find(head, at + 1)
    at = form.rfind(tail, 0, len(form) - 1)  # the longest beginning of form that the text ends with
    while at != -1:
        if text.endswith(form[:at + MIN_ENCODED]):
            found.append((len(text) - at - MIN_ENCODED, len(text)))
            break
        at = form.rfind(tail, 0, at + MIN_ENCODED - 1)
    return found


def _masked(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        spans = sorted(span for form in forms for span in _spans(value, form))
        if not spans:
            return value
        pieces: list[str] = []
        kept = -1  # the end of the last masked stretch (overlapping or touching spans are one)
        for start, end in spans:
            if start > kept:
                pieces += [value[max(kept, 0):start], MASK]
            kept = max(kept, end)
        return "".join(pieces) + value[kept:]
    if isinstance(value, list):
        return [_masked(v, forms) for v in value]
    if isinstance(value, dict):
        return {_masked(k, forms): _masked(v, forms) for k, v in value.items()}
    return value
