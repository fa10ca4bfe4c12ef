"""Masking: a secret's value, and its common encodings, never survive into what is recorded."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from grid_local.secret_refs import MASK, MIN_ENCODED, encodings, mask

# Its base64 holds "+" and "/" (standard and URL-safe differ), its length leaves padding, and it has
# characters that percent-encoding and JSON escape.
VALUE = 'tok???>>>en/"é+ xy'
VALUES = {"token": VALUE}


def b64_forms(raw: bytes) -> list[str]:
    forms = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms += [encode(raw).decode(), encode(raw).decode().rstrip("=")]
    return forms


def test_the_value_differs_in_every_encoding() -> None:
    raw = VALUE.encode()
    standard, urlsafe = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    assert standard != urlsafe and standard.endswith("=") and "+" in standard and "/" in standard
    assert quote(VALUE, safe="") != VALUE and quote_plus(VALUE) != quote(VALUE)


@pytest.mark.parametrize("form", [
    VALUE, *b64_forms(VALUE.encode()), quote(VALUE, safe=""), quote(VALUE), quote_plus(VALUE),
    quote(VALUE, safe="").lower(), VALUE.encode().hex(), VALUE.encode().hex().upper(), json.dumps(VALUE)[1:-1],
])
def test_each_encoding_is_masked_alone_and_inside_text(form: str) -> None:
    assert mask(form, VALUES) == MASK
    assert mask(f"echo: {form}\n", VALUES) == f"echo: {MASK}\n"
    assert form in encodings(VALUE) or form.lower() in encodings(VALUE)


def test_lowercase_percent_escapes_are_masked() -> None:
    lower = quote(VALUE, safe="")
    lower = "".join(c.lower() if i and lower[i - 1] == "%" or i > 1 and lower[i - 2] == "%" else c
                    for i, c in enumerate(lower))
    assert lower != quote(VALUE, safe="") and mask(lower, VALUES) == MASK


@pytest.mark.parametrize("user", ["", "u", "us", "use", "user", "alice-the-admin"])
def test_base64_of_the_value_inside_a_longer_text_keeps_only_its_edges(user: str) -> None:
    """HTTP Basic: base64("user:value"). Whatever the offset, the characters that encode only the
    value's bytes are masked; what is left is the groups of four characters that mix the value's
    first or last one or two bytes with its neighbours', not enough to recover the value."""
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        plain = f"{user}:{VALUE}:tail".encode()
        encoded = encode(plain).decode()
        masked = mask(f"Basic {encoded}", VALUES)
        assert masked.count(MASK) == 1, masked
        left, right = masked.removeprefix("Basic ").split(MASK)
        assert len(left) <= 4 * -(-len(f"{user}:") // 3), left
        assert len(right) <= 4 * -(-(len(":tail") + 2) // 3), right


def test_nested_values_and_keys_are_masked_and_other_text_is_not() -> None:
    encoded = base64.b64encode(VALUE.encode()).decode()
    value = {"body": f"a {VALUE} b", VALUE: [encoded, {"x": VALUE.encode().hex()}], "n": 3, "ok": True,
             "other": "nothing secret here"}
    assert mask(value, VALUES) == {"body": f"a {MASK} b", MASK: [MASK, {"x": MASK}], "n": 3, "ok": True,
                                   "other": "nothing secret here"}
    assert mask(value, {}) == value


def test_short_encodings_are_not_masked_but_the_value_is() -> None:
    short = {"pin": "abc"}  # base64 "YWJj" and hex "616263" : only the hex is long enough
    assert mask("abc YWJj 616263", short) == f"{MASK} YWJj {MASK}"
    assert all(len(f) >= MIN_ENCODED or f == "abc" for f in encodings("abc"))
    assert mask("x", {"empty": ""}) == "x"


def test_several_secrets_the_longest_first() -> None:
    values = {"a": "open-sesame", "b": "open-sesame-and-more"}
    assert mask("open-sesame-and-more / open-sesame", values) == f"{MASK} / {MASK}"
    both = base64.b64encode(b"open-sesame-and-more").decode()
    assert mask(both, values) == MASK


@pytest.mark.parametrize("form", [VALUE, base64.b64encode(VALUE.encode()).decode(), VALUE.encode().hex()])
def test_what_an_output_limit_cut_through_is_masked_at_the_edges(form: str) -> None:
    """A command's output keeps its last MiB and an HTTP body its first 8 MiB: the cut may leave the
    end of a value at the start of the text, or its beginning at the end."""
    for kept in range(MIN_ENCODED, len(form)):
        assert mask(form[-kept:] + " and the rest", VALUES) == f"{MASK} and the rest", kept
        assert mask("the start and " + form[:kept], VALUES) == f"the start and {MASK}", kept
    short = form[:MIN_ENCODED - 1]  # too little to say: left alone
    assert mask("x " + short, VALUES) == "x " + short
    assert mask(f"in the middle {VALUE[:-1]} is no cut", VALUES) == f"in the middle {VALUE[:-1]} is no cut"


def test_overlapping_and_repeating_values_leave_nothing() -> None:
    assert mask("aaaaaaaaaa", {"a": "aaaaaaa"}) == MASK  # overlapping occurrences: one stretch
    periodic = "abcabcabc"
    assert mask(periodic + " rest", {"p": periodic}) == f"{MASK} rest"
    assert mask("x" + periodic + periodic + "y", {"p": periodic}) == f"x{MASK}y"
