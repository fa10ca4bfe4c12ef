"""Cron schedules: fire times from croniter, and the pure rules of a fire (catch-up and overlap).

Expressions are croniter's: five fields (minute hour day month weekday), or six with a trailing
seconds field; evaluated in the schedule's IANA time zone, so ``0 9 * * *`` in Europe/Berlin is
09:00 local time winter and summer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]

OVERLAPS = ("skip", "allow", "cancel-previous")
CATCH_UPS = ("none", "one", "all")
MISFIRE_GRACE = 60.0
"""A fire time handled later than this (seconds) was missed (the grid was down, or stopped)."""
MAX_CATCH_UP = 1000
"""At most this many missed fire times are looked at (and, with catch-up all, started) at once."""


def check_schedule(cron: str, tz: str) -> str | None:
    """None when the expression and time zone are valid, else the problem."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{tz}' (use an IANA name such as UTC or Europe/Berlin)"
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        return (f"invalid cron expression '{cron}' (five fields: minute hour day-of-month month day-of-week, "
                "and an optional sixth for seconds)")
    return None


def next_after(cron: str, tz: str, after: float) -> float:
    """The first fire time strictly after ``after`` (Unix seconds)."""
    start = datetime.fromtimestamp(after, ZoneInfo(tz))
    return float(croniter(cron, start).get_next(float))


def due_times(cron: str, tz: str, next_fire: float, now: float) -> tuple[list[float], float]:
    """Fire times from ``next_fire`` up to ``now`` (at most MAX_CATCH_UP, the latest ones), and the
    first fire time after ``now``."""
    due: list[float] = []
    at = next_fire
    while at <= now:
        due.append(at)
        if len(due) > MAX_CATCH_UP:
            due.pop(0)
        at = next_after(cron, tz, at)
    return due, at


@dataclass
class FirePlan:
    start: list[float] = field(default_factory=list)
    """Fire times that start a flow (each subject to the overlap policy), oldest first."""
    missed: list[float] = field(default_factory=list)
    """Fire times that start nothing under the catch-up policy."""
    next_fire: float = 0.0


def plan_fire(cron: str, tz: str, catch_up: str, next_fire: float, now: float) -> FirePlan:
    """What a fire at ``now`` does. The latest due time is on time when it is at most MISFIRE_GRACE
    old; every earlier one was missed (a later fire time came before it was handled).

    ``none`` starts only an on-time fire; ``one`` starts one flow for the latest due time, on time
    or not; ``all`` starts one per due time, in order."""
    due, following = due_times(cron, tz, next_fire, now)
    plan = FirePlan(next_fire=following)
    if not due:
        return plan
    on_time = now - due[-1] <= MISFIRE_GRACE
    if catch_up == "all":
        plan.start = due
    elif catch_up == "one" or on_time:
        plan.start, plan.missed = [due[-1]], due[:-1]
    else:
        plan.missed = due
    return plan
