"""``partnerscore forecast``: expected revenue with intervals per segment and period.

Reads a scores file (``partnerscore score``) and sums the partners' expected revenue per
segment (``--by tier,region``) and period, with a portfolio interval from the model's variance
model (``pred_revenue_sd`` and the shared level error ``revenue_level_cv`` on every score row; a
compound Poisson-gamma distribution with the segment total's mean and variance,
:func:`partnerscore.models.intervals.portfolio_interval`).
A score row's revenue horizon is ``[as_of, as_of + horizon_days)``. With ``period="day"``
(the default) rows scored on the same ``as_of`` date share a period, as one calendar batch
does; scores made at per-partner cut-offs (``score --at-age``) have one ``as_of`` per signing
date, so ``week``, ``month`` or ``quarter`` sum the partners scored in each calendar bucket:
``period_start`` is the bucket's first day and ``period_end`` the end of the latest horizon in
it. Each period also gets a total row (segment values ``ALL``).

``phased`` (``--phased``) answers "how much revenue in which calendar month" instead: each
score row's expected revenue per phase of its horizon (``pred_revenue_phase_<k>``, from the
model's :class:`~partnerscore.models.phasing.RevenuePhasing`) is spread evenly over the phase's
days and summed per calendar ``period`` (``month`` by default) and segment; a period's interval
bounds each partner's part with ``sd * sqrt(share)``. The output is :data:`FORECAST_COLUMNS`, one
row per (period, segment), written atomically as CSV or Parquet; it is documented in the
README ("Forecast file").

Score rows flagged ``out_of_scope`` (older than the model's trained onboarding ages plus the
policy's tolerance: the model was neither trained nor validated there, and its bias, intervals
and holdout metrics say nothing about them) are left out of the sums by default and counted in
``out_of_scope_partners``; ``include_out_of_scope`` (``--include-out-of-scope``) sums them too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from partnerscore.features.config import BuildConfig
from partnerscore.features.core import (
    OptionError,
    PartnerscoreError,
    as_of_dates,
    at_row,
    other_row,
    quoted,
    read_frame_or_dataset,
    two_rows,
    write_frame_atomic,
)
from partnerscore.models.bundle import PHASE_COLUMN
from partnerscore.models.intervals import portfolio_bounds
from partnerscore.models.phasing import calendar_weights

ALL = "ALL"
PERIODS = {"day": None, "week": "W-SUN", "month": "M", "quarter": "Q"}
"""``--period`` choices and their pandas period frequency (weeks start on Monday)."""
PERIOD_DAYS = {"day": 1.0, "week": 7.0, "month": 30.44, "quarter": 91.31}
"""Mean length of each ``--period`` in days: a phased period must span at least half a phase."""
SHOWN_PERIODS = 12
"""Period totals the summary lists before it says how many more the file holds."""
REQUIRED = ("partner_id", "as_of", "pred_revenue", "pred_revenue_sd")
# (column, dtype, description): the declared schema of the forecast file
FORECAST_SCHEMA = (
    (
        "period_start",
        "datetime64[s]",
        "the scores' as_of date (--period day), else the first day of the calendar bucket; "
        "with --phased the first day of the calendar period the revenue is expected in",
    ),
    (
        "period_end",
        "datetime64[s]",
        "exclusive end of the latest horizon: max as_of + horizon; with --phased the "
        "period's own exclusive end",
    ),
    ("level", "str", "'segment' for a segment row, 'total' for the period's total"),
    ("<by columns>", "str", "segment values (one column per --by field; ALL on total rows)"),
    (
        "partners",
        "int64",
        "partners scored in the segment and period (--phased: whose horizon overlaps it)",
    ),
    (
        "expected_revenue",
        "float64",
        "sum of pred_revenue (--phased: of the part of it expected in the period)",
    ),
    (
        "revenue_lo",
        "float64",
        "lower end of the portfolio interval (>= 0; 0 when the segment's chance of earning "
        "nothing at all is at least (1 - coverage) / 2)",
    ),
    (
        "revenue_hi",
        "float64",
        "upper end of the portfolio interval (in a small or sparse cell it can lie below "
        "expected_revenue: a few large deals carry the mean)",
    ),
    (
        "revenue_sd",
        "float64",
        "standard deviation of the segment total: sqrt(sum pred_revenue_sd^2 + "
        "(revenue_level_cv * expected_revenue)^2)",
    ),
    ("coverage", "float64", "nominal coverage of the interval"),
    (
        "out_of_scope_partners",
        "int64",
        "partners of the segment and period scored out of onboarding scope; not in the sums "
        "unless --include-out-of-scope",
    ),
    ("model_version", "str", "model version(s) of the score rows, comma-separated"),
)


def forecast_columns(by: tuple[str, ...]) -> list[str]:
    """Output columns in order for a given ``--by``."""
    out = []
    for name, _, _ in FORECAST_SCHEMA:
        if name == "<by columns>":
            out.extend(by)
        else:
            out.append(name)
    return out


@dataclass
class ForecastResult:
    """What ``run_forecast`` wrote."""

    out: Path
    table: pd.DataFrame
    by: tuple[str, ...]
    partners: int
    seconds: float = 0.0
    periods: list[str] = field(default_factory=list)
    include_out_of_scope: bool = False
    period: str = "day"
    phased: bool = False

    def summary(self) -> str:
        """The period totals and where the file is."""
        basis = f", phased: revenue by the {self.period} it is expected in" if self.phased else ""
        lines = [
            f"forecast of {self.partners:,} scored partners by {', '.join(self.by) or 'total'}"
            f"{basis} -> {self.out} ({len(self.table):,} rows) in {self.seconds:.1f} s"
        ]
        totals = self.table[self.table["level"] == "total"]
        for rec in totals.head(SHOWN_PERIODS).itertuples():
            line = (
                f"  {rec.period_start:%Y-%m-%d} .. {rec.period_end:%Y-%m-%d}: expected "
                f"{rec.expected_revenue:,.0f} ({coverage_text(rec.coverage)} interval "
                f"{rec.revenue_lo:,.0f} - {rec.revenue_hi:,.0f}) from {rec.partners:,} partners"
            )
            if rec.out_of_scope_partners and self.include_out_of_scope:
                line += f", {rec.out_of_scope_partners:,} of them out of onboarding scope"
            elif rec.out_of_scope_partners:
                line += (
                    f"; {rec.out_of_scope_partners:,} partners out of onboarding scope (older "
                    "than the trained ages) not included (--include-out-of-scope adds them)"
                )
            lines.append(line)
        if len(totals) > SHOWN_PERIODS:
            lines.append(f"  ... and {len(totals) - SHOWN_PERIODS:,} more periods in the file")
        typical = float(totals["partners"].median()) if len(totals) else 0.0
        if (
            self.period == "day"
            and not self.phased
            and len(totals) > SHOWN_PERIODS
            and typical < 30
        ):
            lines.append(
                f"  hint: {len(totals):,} scoring dates with a median of {typical:,.0f} partners "
                "each (per-partner cut-offs?): --period month sums them by calendar month"
            )
        return "\n".join(lines)


def parse_by(text: str | None) -> tuple[str, ...]:
    """``tier,region`` -> ("tier", "region"); empty -> ()."""
    if not text:
        return ()
    fields = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(set(fields)) != len(fields):
        raise OptionError(f"--by: repeated field in '{text}'")
    return fields


LAYOUT_COLUMNS = {"horizon_days": "revenue_horizon_days", "phase_days": "revenue_phase_days"}
"""The score columns that record the scoring model's horizon and phase length (keys: the
:class:`~partnerscore.features.config.BuildConfig` fields that serve files without them)."""


def model_layout(
    scores: pd.DataFrame,
    source: str,
    given: dict[str, int | None],
    build: BuildConfig | None = None,
    needed: tuple[str, ...] = tuple(LAYOUT_COLUMNS),
) -> dict[str, int]:
    """The horizon and phase length a forecast of these score rows uses.

    The scoring model's own values (:data:`LAYOUT_COLUMNS` on every row written since they
    were recorded) win; ``given`` values must agree with them, and ``build`` (the config's
    build section, default :class:`BuildConfig`'s) serves score files without the columns.
    Only the ``needed`` columns are read (a forecast that is not phased has no use for the
    phase length).

    Raises:
        PartnerscoreError: A column holds more than one value (rows of models with different
            horizons: forecast them apart), a value that is not a positive whole number, or
            one that disagrees with ``given``.
    """
    fallback = (build or BuildConfig()).model_dump()
    out = {}
    for key, col in LAYOUT_COLUMNS.items():
        want = given.get(key)
        if col not in scores.columns or key not in needed:
            out[key] = int(want or fallback[key])
            continue
        values = pd.to_numeric(scores[col], errors="coerce")
        bad = values.isna() | (values <= 0) | ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise PartnerscoreError(
                f"{at_row(source, row, col)}: expected a whole number of days, "
                f"got {quoted(scores[col].iloc[row])}"
            )
        found = sorted({int(v) for v in values.unique()})
        if len(found) > 1:
            first = int(values.iloc[0])
            row = int(np.flatnonzero((values != first).to_numpy())[0])
            raise PartnerscoreError(
                f"{at_row(source, row, col)}: {int(values.iloc[row])} days where "
                f"{other_row(source, 0, row)} has {first} (rows scored by models with different "
                "horizons or phases: "
                "forecast them apart)"
            )
        if found and want is not None and int(want) != found[0]:
            raise PartnerscoreError(
                f"{key} {int(want)}: the scores were made by a model with {found[0]} "
                f"({source}, column '{col}'); leave it out to use the model's"
            )
        out[key] = found[0] if found else int(want or fallback[key])
    return out


LEVEL_COLUMN = "revenue_level_cv"
"""The score column of the model's shared level error (``RevenueIntervals.level``)."""


def level_error(scores: pd.DataFrame, source: str) -> float:
    """The shared level error ``tau`` of the scores' model(s): 0 without the column.

    Rows of several models (a file of batches across a retrain) take the largest: the sum's
    level errors are then bounded as if they were fully correlated, ``tau_max * M >= sum
    tau_v * M_v``.

    Raises:
        PartnerscoreError: A value is not a number >= 0 (file, column and row).
    """
    if LEVEL_COLUMN not in scores.columns:
        return 0.0
    raw = scores[LEVEL_COLUMN]
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values < 0) | (raw.notna() & values.isna()) | np.isinf(values)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PartnerscoreError(
            f"{at_row(source, row, LEVEL_COLUMN)}: expected a number >= 0, "
            f"got {quoted(raw.iloc[row])}"
        )
    return float(values.max()) if values.notna().any() else 0.0


def coverage_text(coverage: float) -> str:
    """``80%``, or as many digits as it takes not to round to another share (``99.9999%``)."""
    for digits in range(0, 8):
        text = f"{coverage:.{digits}%}"
        if abs(float(text.rstrip("%")) / 100 - coverage) < 1e-12:
            return text
    return f"{coverage:.8%}"


def _amounts(given: pd.Series, col: str, source: str) -> pd.Series:
    """A score file's revenue column as finite, non-negative numbers whose squares sum.

    Raises:
        PartnerscoreError: The first row (1-based data record) that is missing, not a
            number, infinite, negative, or so large that the segment sums would overflow.
    """
    values = pd.to_numeric(given, errors="coerce")
    missing = given.isna().to_numpy() | (given.astype(str).str.strip() == "").to_numpy()
    numbers = values.to_numpy(dtype=float, na_value=np.nan)
    hint = " (scored by a model without intervals: retrain)" if col.endswith("sd") else ""
    problems = (
        (missing, lambda v: f"missing{hint}"),
        (np.isnan(numbers) & ~missing, lambda v: f"{quoted(v)} is not a number"),
        (np.isinf(numbers), lambda v: f"{v} is not finite"),
        (numbers < 0, lambda v: f"{v} is negative"),
    )
    for mask, what in problems:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise PartnerscoreError(f"{at_row(source, row, col)}: {what(given.iloc[row])}")
    with np.errstate(over="ignore"):
        total = float(np.square(numbers).sum())
    if not np.isfinite(total):  # the segment sums and variances would be inf
        row = int(np.argmax(numbers))
        raise PartnerscoreError(
            f"{at_row(source, row, col)}: {given.iloc[row]} is too large to sum "
            "(the portfolio total overflows)"
        )
    return pd.Series(numbers, index=given.index)


def forecast_table(
    scores: pd.DataFrame,
    by: tuple[str, ...],
    horizon_days: int | None,
    coverage: float,
    source: str = "scores",
    include_out_of_scope: bool = False,
    period: str = "day",
    phased: bool = False,
    phase_days: int | None = None,
    build: BuildConfig | None = None,
) -> pd.DataFrame:
    """The forecast rows (:data:`FORECAST_SCHEMA`) from score rows.

    The horizon and phase length are the scoring model's (``revenue_horizon_days`` /
    ``revenue_phase_days`` on the rows, :func:`model_layout`); ``horizon_days`` and
    ``phase_days``, when given, must agree with them, and serve (or ``build``'s, else the
    defaults') score files without those columns.

    Rows whose ``out_of_scope`` flag is true are counted in ``out_of_scope_partners`` and, unless
    ``include_out_of_scope``, left out of every sum (a segment of out-of-scope partners only
    keeps its row, with 0 partners and 0 revenue). Scores without the column are all in scope.
    ``period`` (:data:`PERIODS`) buckets the scoring dates: ``day`` keeps each date apart.
    With ``phased``, ``period`` buckets the days on which the revenue is expected instead:
    each row's ``pred_revenue_phase_<k>`` (``phase_days`` each, from the model's phasing)
    spread evenly over its days (:func:`~partnerscore.models.phasing.calendar_weights`), its
    ``pred_revenue_sd`` times the square root of the period's share (the bound in
    :mod:`~partnerscore.models.phasing`); ``period_end`` is then the period's own end.

    Raises:
        PartnerscoreError: A required or ``by`` column is missing, an ``as_of`` is not a date
            or in another time zone than row 1's, ``pred_revenue_sd`` is empty (scores from a
            model without intervals), ``out_of_scope`` is not a flag, or
            (``phased``) the phase columns are missing, empty or do not cut the horizon.
        OptionError: A ``by`` column the forecast reads or writes itself, a ``coverage``
            outside (0, 1) or an unknown ``period``.
    """
    for col in (*REQUIRED, *by):
        if col not in scores.columns:
            raise PartnerscoreError(f"{source}: missing column '{col}'")
    reserved = {*REQUIRED, "out_of_scope", *(n for n, _, _ in FORECAST_SCHEMA)}
    for col in by:
        if col in reserved or col.startswith(PHASE_COLUMN) or col.startswith("_"):
            raise OptionError(
                f"--by {col}: the forecast reads or writes this column itself (model_version "
                "lists each row's versions); segment by a label such as tier, region, industry "
                "or partner_type"
            )
    if scores.empty:
        raise PartnerscoreError(f"{source}: no scored partners")
    if not 0 < coverage < 1:
        raise OptionError(f"--coverage: expected a share in (0, 1), got {coverage}")
    if period not in PERIODS:
        raise OptionError(f"--period {period}: expected one of {', '.join(PERIODS)}")
    layout = model_layout(
        scores,
        source,
        {"horizon_days": horizon_days, "phase_days": phase_days},
        build,
        needed=("horizon_days", "phase_days") if phased else ("horizon_days",),
    )
    horizon_days, phase_days = layout["horizon_days"], layout["phase_days"]
    wanted = [*REQUIRED, *by, "model_version", "out_of_scope"]
    if phased:
        wanted += [c for c in scores.columns if c.startswith(PHASE_COLUMN)]
    # only the columns a forecast reads: score files carry every feature and contribution
    data = scores[list(dict.fromkeys(c for c in wanted if c in scores.columns))].copy()
    data["_start"] = as_of_dates(source, data).dt.floor("D")
    freq = PERIODS[period]
    data["_bucket"] = (
        data["_start"] if freq is None else data["_start"].dt.to_period(freq).dt.start_time
    )
    for col in ("pred_revenue", "pred_revenue_sd"):
        data[col] = _amounts(data[col], col, source)
    for col in by:
        data[col] = data[col].astype(object).where(data[col].notna(), "missing").astype(str)
    versions = (
        data["model_version"].astype(str) if "model_version" in data else pd.Series("", data.index)
    )
    data["_version"] = versions
    data["_oos"] = _scope_flags(data, source)
    data["_row"] = np.arange(len(data))
    if phased:
        rows = data
        data = _phased_rows(rows, horizon_days, phase_days, freq or "D", source)
        if PERIOD_DAYS[period] < phase_days / 2:
            # each phase is spread evenly over days the model cannot tell apart, and the
            # interval bound (sd * sqrt(share)) degenerates: on the demo the 80% intervals of
            # daily totals covered 62% of realised days, 96% with the upper end below the mean
            raise PartnerscoreError(
                f"--period {period}: shorter than half the model's {phase_days}-day revenue "
                "phases; --phased resolves revenue by phase, so use a period of at least "
                f"{phase_days / 2:g} days (e.g. --period month)"
            )
        summed_rows = _summed(rows, include_out_of_scope)  # by score row: horizons
        _refuse_double_counts(summed_rows, source, period, horizon_days)
        ends = (
            data.groupby("_bucket", sort=True)["_bucket"]
            .first()
            .map(
                lambda start: (
                    pd.Period(start, freq=freq or "D").end_time.floor("D") + pd.Timedelta(days=1)
                )
            )
        )
    else:
        ends = data.groupby("_bucket", sort=True)["_start"].max() + pd.Timedelta(days=horizon_days)
    data["_var"] = np.square(data["pred_revenue_sd"].to_numpy(float))
    summed = _summed(data, include_out_of_scope)
    if not phased:  # by score row: one period each (the phased rows were checked above)
        _refuse_double_counts(summed, source, period, None)
    levels = [("total", ["_bucket"])] + ([("segment", ["_bucket", *by])] if by else [])
    parts = []
    for level, keys in levels:
        # every (period, segment) with score rows keeps its row, in scope or not
        cells = data.groupby(keys, sort=True).size().index
        grouped = summed.groupby(keys, sort=True)
        out = pd.DataFrame(
            {
                "partners": grouped["partner_id"].nunique(),
                "expected_revenue": grouped["pred_revenue"].sum(),
                "_var": grouped["_var"].sum(),
            }
        ).reindex(cells)
        versions = summed[[*keys, "_version"]].drop_duplicates()
        versions = versions[versions["_version"] != ""].sort_values("_version", kind="stable")
        out["model_version"] = versions.groupby(keys, sort=True)["_version"].agg(",".join)
        oos = data[data["_oos"].to_numpy()].groupby(keys, sort=True)["partner_id"].nunique()
        out["out_of_scope_partners"] = oos.reindex(cells).fillna(0)
        out = out.reset_index()
        if level == "total":
            for col in by:
                out[col] = ALL
        out["level"] = level
        parts.append(out)
    table = pd.concat(parts, ignore_index=True)
    table["_rank"] = (table["level"] == "segment").astype(int)
    table = table.sort_values(["_bucket", "_rank", *by], kind="stable").reset_index(drop=True)
    table["partners"] = table["partners"].fillna(0)
    table["expected_revenue"] = table["expected_revenue"].fillna(0.0)
    table["_var"] = table["_var"].fillna(0.0)
    # the model's level error, shared by the cell's partners: (tau * mean)^2
    level = level_error(scores, source)
    table["_var"] += np.square(level * table["expected_revenue"].to_numpy(float))
    table["model_version"] = table["model_version"].fillna("")
    lo, hi = portfolio_bounds(
        table["expected_revenue"].to_numpy(float), table["_var"].to_numpy(float), coverage
    )
    table = table.assign(
        period_start=table["_bucket"],
        period_end=table["_bucket"].map(ends),
        revenue_lo=lo,
        revenue_hi=hi,
        revenue_sd=np.sqrt(table["_var"].to_numpy(float)),
        coverage=coverage,
    )[forecast_columns(by)]

    table["period_start"] = table["period_start"].astype("datetime64[s]")
    table["period_end"] = table["period_end"].astype("datetime64[s]")
    table["partners"] = table["partners"].astype("int64")
    table["out_of_scope_partners"] = table["out_of_scope_partners"].astype("int64")
    for col in ("level", "model_version", *by):
        table[col] = table[col].astype("str")
    return table


def _phased_rows(
    data: pd.DataFrame, horizon_days: int, phase_days: int, freq: str, source: str
) -> pd.DataFrame:
    """Score rows spread over the calendar periods of their revenue phases.

    One line per (score row, period) with the row's columns, ``pred_revenue`` the row's
    expected revenue in the period, ``pred_revenue_sd`` its standard deviation bound
    (``sd * sqrt(share)``) and ``_bucket`` the period's first day.
    """
    n = int(np.ceil(horizon_days / phase_days))
    cols = [f"{PHASE_COLUMN}{k}" for k in range(1, n + 1)]
    found = [c for c in data.columns if c.startswith(PHASE_COLUMN)]
    if not found:
        raise PartnerscoreError(
            f"{source}: missing column '{cols[0]}' (scored by a model without revenue "
            "phasing: retrain, or forecast without --phased)"
        )
    if sorted(found) != sorted(cols):
        raise PartnerscoreError(
            f"{source}: {len(found)} revenue phase columns do not cut the {horizon_days}-day "
            f"horizon into {phase_days}-day phases ({n}): check build.horizon_days and "
            "build.phase_days against the model's training set"
        )
    amounts = np.empty((len(data), n))
    for k, col in enumerate(cols):
        values = pd.to_numeric(data[col], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise PartnerscoreError(f"{at_row(source, row, col)}: missing")
        amounts[:, k] = values.to_numpy(float)
    long = calendar_weights(data["_start"], amounts, horizon_days, phase_days, freq)
    at = long["row"].to_numpy()
    lines = data.iloc[at].reset_index(drop=True)
    lines["pred_revenue"] = long["amount"].to_numpy()
    lines["pred_revenue_sd"] = lines["pred_revenue_sd"].to_numpy() * np.sqrt(
        long["share"].to_numpy()
    )
    lines["_bucket"] = pd.to_datetime(long["period_start"].to_numpy())
    return lines


def _summed(data: pd.DataFrame, include_out_of_scope: bool) -> pd.DataFrame:
    """The lines a forecast sums: those in onboarding scope, or all with the option."""
    return data if include_out_of_scope else data[~data["_oos"].to_numpy()]


def _refuse_double_counts(
    data: pd.DataFrame, source: str, period: str, horizon_days: int | None
) -> None:
    """Stop when a period's sums would hold a partner's expected revenue twice.

    A period sums each partner's expected revenue once (``partners`` counts it once). Two score
    rows of a partner (one batch scored by two model versions, or several batches in one file)
    count it twice when their scoring dates share a ``--period`` bucket or, ``--phased``
    (``horizon_days`` given: the revenue is spread over each row's horizon), when their
    horizons overlap: the same days' revenue. Horizons that only meet in a period, one ending
    as the other starts, expect revenue for different days and are summed. Only the rows the
    sums take are checked (:func:`_summed`): two rows of a partner out of onboarding scope,
    left out of the sums, count it nowhere.

    Args:
        data: One line per summed score row, with ``_start``, ``_bucket``, ``_row`` and
            ``_version``.
        source: The scores file, for the message.
        period: The ``--period``.
        horizon_days: The rows' horizon when ``--phased``; None otherwise.

    Raises:
        PartnerscoreError: The first such partner, its two rows (1-based data records) and
            the period.
    """
    ids = data["partner_id"].astype(str).to_numpy()
    rows = data["_row"].to_numpy()
    if horizon_days is None:
        keys = pd.DataFrame({"id": ids, "at": data["_bucket"].to_numpy()})
        again = keys.duplicated(keep="first").to_numpy()
        if not again.any():
            return
        j = int(np.flatnonzero(again)[0])
        same = (keys["id"] == keys["id"].iloc[j]) & (keys["at"] == keys["at"].iloc[j])
        i = int(np.flatnonzero(same.to_numpy())[0])
        what = f"the period {data['_bucket'].iloc[i]:%Y-%m-%d} (--period {period})"
    else:
        # sorted by partner and start, a row's horizon overlaps another's if it overlaps the
        # next one's: all horizons have the same length
        start = data["_start"].to_numpy()
        order = np.lexsort((rows, start, ids))
        ends = data["_start"].iloc[order] + pd.Timedelta(days=horizon_days)
        overlap = (ids[order][1:] == ids[order][:-1]) & (start[order][1:] < ends.to_numpy()[:-1])
        if not overlap.any():
            return
        later = np.maximum(rows[order][1:], rows[order][:-1])
        k = int(np.flatnonzero(overlap)[np.argmin(later[overlap])])  # first in the file
        i, j = sorted((int(order[k]), int(order[k + 1])), key=lambda at: rows[at])
        shared = max(data["_start"].iloc[i], data["_start"].iloc[j])  # the first day of both
        freq = PERIODS[period] or "D"
        what = (
            f"the {period} starting {pd.Period(shared, freq=freq).start_time:%Y-%m-%d} "
            "(--phased: their horizons overlap)"
        )
    first, second = data.iloc[i], data.iloc[j]
    versions = ""
    if first["_version"] != second["_version"]:
        versions = f" by model versions {first['_version']} and {second['_version']}"
    where, rows = two_rows(source, first["_row"], second["_row"])
    raise PartnerscoreError(
        f"{where}: partner '{ids[j]}' is scored in {rows} "
        f"(as of {first['_start']:%Y-%m-%d} and "
        f"{second['_start']:%Y-%m-%d}{versions}), both summed into {what}: its revenue would "
        "be counted twice; forecast one batch per file (one row per partner and period)"
    )


_FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _scope_flags(data: pd.DataFrame, source: str) -> pd.Series:
    """Each row's ``out_of_scope`` flag (bool, or true/false/1/0 text from a CSV)."""
    if "out_of_scope" not in data:
        return pd.Series(False, index=data.index)
    raw = data["out_of_scope"]
    if raw.dtype == bool:
        return raw
    text = raw.astype(object).where(raw.notna(), "").astype(str).str.strip().str.lower()
    flags = text.map(_FLAGS)
    if flags.isna().any():
        row = int(np.flatnonzero(flags.isna().to_numpy())[0])
        raise PartnerscoreError(
            f"{at_row(source, row, 'out_of_scope')}: expected true or false, got "
            f"{quoted(raw.iloc[row])}"
        )
    return flags.astype(bool)


def run_forecast(
    config,
    scores_path: str | Path,
    out: str | Path,
    by: tuple[str, ...] = ("tier", "region"),
    coverage: float | None = None,
    horizon_days: int | None = None,
    include_out_of_scope: bool = False,
    period: str | None = None,
    phased: bool = False,
) -> ForecastResult:
    """The ``partnerscore forecast`` job.

    Args:
        config: Application config (``train.interval_coverage`` is the default of
            ``coverage``; ``build.horizon_days`` and ``build.phase_days`` serve score files
            that do not record the scoring model's, :func:`model_layout`).
        scores_path: Scores file written by ``partnerscore score``, or the Parquet dataset
            folder ``score --engine spark`` writes (read as one file, in partner order).
        out: Forecast file (.csv or .parquet), written atomically.
        by: Segment columns of the score rows.
        coverage: Nominal coverage of the portfolio intervals.
        horizon_days: The scoring model's horizon, if known (checked against the scores').
        include_out_of_scope: Sum the partners scored out of onboarding scope too.
        period: ``day``, ``week``, ``month`` or ``quarter``: the calendar bucket of the scoring
            dates, or with ``phased`` of the days the revenue is expected (default ``day``,
            ``month`` with ``phased``).
        phased: Spread each partner's expected revenue over its horizon by the model's
            revenue phases instead of summing it at the scoring date.

    Returns:
        The forecast table and where it was written.
    """
    started = time.perf_counter()
    period = period or ("month" if phased else "day")
    scores_path = Path(scores_path)
    # a file, or --engine spark's folder; a publish killed midway refused
    scores, source = read_frame_or_dataset(scores_path, again="run `partnerscore score` again")
    table = forecast_table(
        scores,
        tuple(by),
        horizon_days,
        float(coverage if coverage is not None else config.train.interval_coverage),
        source=source if isinstance(source, str) else str(source),
        include_out_of_scope=include_out_of_scope,
        period=period,
        phased=phased,
        build=config.build,
    )
    path = write_frame_atomic(table, out)
    return ForecastResult(
        out=path,
        table=table,
        by=tuple(by),
        partners=int(scores["partner_id"].nunique()),
        seconds=time.perf_counter() - started,
        periods=[f"{p:%Y-%m-%d}" for p in table["period_start"].unique()],
        include_out_of_scope=include_out_of_scope,
        period=period,
        phased=phased,
    )
