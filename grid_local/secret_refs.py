"""Secret references, as flows hold them, and what connectors do with them (see db/secrets.py).

A flow's ``fctx.secrets.<alias>`` is the string ``{{flowmetal.secret:<name>}}``. A connector
substitutes the value for the reference as it performs a request, and masks every occurrence of
the value in the result (``***``) before it is recorded.
"""

from __future__ import annotations

import re
from typing import Any

REFERENCE = re.compile(r"\{\{flowmetal\.secret:([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\}\}")
MASK = "***"
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


def mask(value: Any, values: dict[str, str]) -> Any:
    """``value`` with every occurrence of a secret's value replaced by ``***`` (before it is recorded)."""
    if isinstance(value, str):
        for secret in sorted(values.values(), key=len, reverse=True):
            if secret:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, list):
        return [mask(v, values) for v in value]
    if isinstance(value, dict):
        return {mask(k, values): mask(v, values) for k, v in value.items()}
    return value
