"""A flow's evaluation bounds (``[limits]`` in flowmetal.toml, within the grid's maxima).

Apart from the runtime so that the processes that only pass limits on (the supervisor, the CLI
reading a project) do not load the Starlark interpreter with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grid_local.bundle_format import PROJECT_FILE
from grid_local.errors import BundleError

LIMIT_NAMES = ("eval_budget", "max_callstack", "suspend_after", "memory_mib")


@dataclass
class Limits:
    """Bounds on one flow's evaluation (``[limits]`` in flowmetal.toml lowers them, up to the grid's maxima)."""

    eval_budget: float = 10.0
    """CPU seconds a flow may evaluate between two actions before it is stopped."""
    max_callstack: int = 100
    """Deepest Starlark call stack allowed."""
    suspend_after: float = 10.0
    """Seconds to wait in memory for an action's result before suspending the flow."""
    memory_mib: int = 2048
    """MiB a flow's evaluation may grow its worker's memory by (``runtime/footprint.py``); unless a
    bundle asks for less, the worker's own memory (``grid up --worker-memory``)."""
    capped: tuple[str, ...] = ()
    """The limits a bundle asked to raise above the grid's maxima (they were held at the maxima)."""
    capped_by: tuple[tuple[str, str], ...] = ()
    """The limits the flow's quota tree holds below what its bundle asked, each with the node that sets it."""
    asked: tuple[str, ...] = field(default=(), compare=False)
    """The limits the bundle's [limits] sets (the others are defaults, or the worker's own memory):
    provenance for an error's words, not part of what the limits are."""

    @classmethod
    def from_settings(cls, settings: dict[str, Any], maxima: "Limits | None" = None) -> "Limits":
        """The limits of flows of a bundle whose flowmetal.toml holds ``settings``, within ``maxima``.

        A bundle can lower any limit; asking for more than the grid's maximum gets the maximum
        (recorded in ``capped``, so that the error of a flow that hits it says so). A value of the
        wrong type raises BundleError naming the setting and the value."""
        maxima = maxima or GRID_MAXIMA
        section = settings.get("limits", {}) if isinstance(settings, dict) else {}
        if not isinstance(section, dict):
            raise BundleError(f"{PROJECT_FILE}: [limits] must be a table, got {section!r}")
        unknown = sorted(set(section) - set(LIMIT_NAMES))
        if unknown:
            raise BundleError(f"{PROJECT_FILE}: [limits] has no setting '{unknown[0]}' "
                              f"(known: {', '.join(LIMIT_NAMES)})")
        values: dict[str, Any] = {}
        capped = []
        for name in LIMIT_NAMES:
            maximum = getattr(maxima, name)
            # Memory: a bundle that does not ask may use what its worker has, however much that is.
            value = section.get(name, maximum if name == "memory_mib" else getattr(cls, name))
            value = _limit_value(name, value)
            if value > maximum:
                value = maximum
                capped.append(name)
            values[name] = value
        return cls(**values, capped=tuple(capped), asked=tuple(name for name in LIMIT_NAMES if name in section))

    def hint(self, name: str, flag: str) -> str:
        """Where limit ``name`` comes from: the quota node that caps it, flowmetal.toml, or (when capped)
        where the grid starts."""
        node = dict(self.capped_by).get(name)
        if node is not None:
            words = {"eval_budget": "s of evaluation budget per flow", "memory_mib": " MiB of memory per flow"}
            return f"the cap of quota {node}: {getattr(self, name):g}{words.get(name, ' ' + name)}"
        if name in self.capped:
            return f"[limits] {name}, capped at the grid's maximum: grid up {flag}"
        return f"[limits] {name}"


def _limit_value(name: str, value: Any) -> Any:
    shown = f"{PROJECT_FILE}: [limits] {name}"
    if name in ("max_callstack", "memory_mib"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BundleError(f"{shown} must be a whole number, got {value!r}")
        if value < 1:
            raise BundleError(f"{shown} must be at least 1, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"{shown} must be a number, got {value!r}")
    if not value > 0 or value != value or value == float("inf"):
        raise BundleError(f"{shown} must be a positive number of seconds, got {value!r}")
    return float(value)


GRID_MAXIMA = Limits(eval_budget=60.0, max_callstack=10000, suspend_after=300.0, memory_mib=2048)
"""The grid's own maxima unless it is started with others (grid up --max-eval-budget, --max-callstack,
--max-suspend-after, --worker-memory). 10,000 frames fit the 8 MiB stack of a flow thread with room to spare (about
40,000 do not)."""
