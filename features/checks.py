"""The monitoring check record: one measured value against its thresholds, with a status."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CHECK_COLUMNS = (
    "name",
    "section",
    "subject",
    "segment",
    "statistic",
    "value",
    "warn",
    "threshold",
    "p_value",
    "status",
    "detail",
)


@dataclass(frozen=True)
class Check:
    """One monitoring check (a row of ``monitor.json``'s ``checks``).

    Attributes:
        name: Unique name, ``<section>.<statistic>.<subject>[.<segment>]``.
        section: drift, quality, staleness, scope or backtest.
        subject: Feature, prediction, table or metric checked.
        segment: ``all`` or ``<segment>=<value>``.
        statistic: What ``value`` is (psi, missing_rate_change, days_stale, ...).
        value: The measured value (None when it could not be measured).
        warn: Warn threshold (None when the check has none).
        threshold: Alarm threshold (None when the check has none).
        p_value: Test p-value after multiple-testing adjustment, where a test applies.
        status: ok, warn, alarm, skip (not measurable, e.g. too few rows) or info.
        detail: One readable sentence.
        explained_by: Set on a check whose change another check explains (a segment's
            volume drop that is region NA's drop seen through the tier column): the
            explaining segments; such a check is ``info``. Left out of ``to_dict`` when None.
    """

    name: str
    section: str
    subject: str
    segment: str
    statistic: str
    value: float | None
    warn: float | None
    threshold: float | None
    p_value: float | None
    status: str
    detail: str = ""
    explained_by: str | None = None

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN -> None); ``explained_by`` only where set."""
        out = asdict(self)
        if out["explained_by"] is None:
            del out["explained_by"]
        for key in ("value", "warn", "threshold", "p_value"):
            v = out[key]
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)):
                out[key] = None
            elif v is not None:
                out[key] = float(v)
        return out


def level(value: float | None, warn: float | None, alarm: float | None, higher_is_bad=True) -> str:
    """ok/warn/alarm of a value against thresholds (None thresholds never fire)."""
    if value is None or not math.isfinite(value):
        return "skip"
    sign = 1 if higher_is_bad else -1
    if alarm is not None and sign * value >= sign * alarm:
        return "alarm"
    if warn is not None and sign * value >= sign * warn:
        return "warn"
    return "ok"
