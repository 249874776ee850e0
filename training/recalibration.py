"""Out-of-fold recalibration of the revenue head: one overall factor and one per segment value.

A log-link model of heavy-tailed revenue shrinks toward the mean on partners it has not seen:
high-value segments are under-predicted, low-value ones over-predicted. One overall factor
fixes the portfolio total, not that tilt. :func:`fit_segment_factors` estimates, from the time
folds' out-of-fold predictions ``m`` and labels ``y``, a multiplicative model

    E[y] = m * exp(a + b[tier] + c[region] + ...)

with ``a`` free (the overall factor ``exp(a)``) and each segment's log factor shrunk toward 0
(factor 1) by an empirical-Bayes (credibility) weight:

- the raw log factor of value ``v`` of column ``c`` is ``log(sum y / sum m_v)`` over its rows,
  ``m_v`` the prediction with every other factor applied (a ratio estimator, the Poisson MLE);
- its sampling variance is the partner-clustered delta-method variance of the contrast
  ``log(R_v) - log(R)`` with the overall ratio (a partner's snapshots are correlated, so
  partners are the independent units; for the onboarding age, where every partner is in
  every value, the partner's own level cancels in the contrast);
- the spread of true log factors across the column's values, ``tau^2``, is the
  DerSimonian-Laird moment estimate (or ``prior_sd^2`` when given);
- the shrunk log factor is ``w * raw`` with ``w = tau^2 / (tau^2 + se^2)``: a small or noisy
  segment keeps a factor close to 1, a large one with a clear tilt gets nearly its raw factor.

The terms are fitted by backfitting: each column in turn, jointly with ``a`` (the credibility
weights do not depend on ``a``, so ``a`` solves one monotone equation that makes the predicted
total equal the label total); at the fixed point every column's shrunk factors and the overall
factor are consistent with each other. Values with fewer than ``min_partners`` partners
or no revenue keep factor 1; so do values unseen at scoring time (overall factor only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SETTLED = 1e-6
"""Largest move of any log factor in a fit's last sweep for the fit to count as settled
(``tol`` is the stopping rule; a fit stopped by ``max_sweeps`` short of it but within this is
settled far below any sampling noise: two-column fits of tier and region take 15-30 sweeps
to reach ``tol`` 1e-12)."""

TABLE_COLUMNS = (
    "column",
    "value",
    "partners",
    "rows",
    "label_total",
    "oof_total",
    "raw_factor",
    "se_log",
    "weight",
    "factor",
)


@dataclass(frozen=True)
class SegmentFactors:
    """Fitted recalibration factors.

    Attributes:
        overall: The overall multiplicative factor (``exp(a)``).
        factors: Segment column -> value -> shrunk multiplicative factor (values with factor 1
            because they were too small are included; unseen values are not).
        tau: Segment column -> the between-value standard deviation of log factors used.
        table: One row per (column, value), columns :data:`TABLE_COLUMNS`: partners, rows,
            label and out-of-fold totals, the raw factor given the other terms, the s.e. of its
            log, the credibility weight and the shrunk factor.
        sweeps: Backfitting sweeps run.
        change: Largest move of a log factor (the overall one included) in the last sweep:
            at most ``tol`` when the fit converged.
    """

    overall: float
    factors: dict[str, dict[str, float]] = field(default_factory=dict)
    tau: dict[str, float] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS))
    sweeps: int = 0
    change: float = 0.0

    @property
    def settled(self) -> bool:
        """Whether the last sweep moved no log factor by more than :data:`SETTLED`."""
        return bool(self.change <= SETTLED)

    def multiplier(self, segments: pd.DataFrame) -> np.ndarray:
        """Per-row product of the overall and segment factors (unknown values: factor 1)."""
        return row_factors(self.factors, segments, start=self.overall)

    def to_dict(self) -> dict:
        """JSON-ready: overall, factors, tau and the per-value table."""
        return {
            "overall": self.overall,
            "factors": self.factors,
            "tau": self.tau,
            "sweeps": self.sweeps,
            "change": self.change,
            "table": self.table.to_dict(orient="records"),
        }


def row_factors(
    factors: dict[str, dict[str, float]], segments: pd.DataFrame, start: float = 1.0
) -> np.ndarray:
    """Per-row ``start`` times per-value factors (column -> value -> factor; unknown values: 1)."""
    out = np.full(len(segments), start)
    for col, table in factors.items():
        out *= segment_text(segments[col]).map(table).astype(float).fillna(1.0).to_numpy()
    return out


def segment_text(values: pd.Series) -> pd.Series:
    """Segment values as the text keys of the factor tables (missing stays None)."""
    out = values.astype(object).where(values.notna(), None)
    return out.map(lambda v: None if v is None else str(v))


def dersimonian_laird(theta: np.ndarray, var: np.ndarray) -> float:
    """Between-group variance of effects ``theta`` with sampling variances ``var`` (>= 0)."""
    theta, var = np.asarray(theta, float), np.asarray(var, float)
    if len(theta) < 2:
        return 0.0
    w = 1.0 / var
    mean = np.sum(w * theta) / np.sum(w)
    q = np.sum(w * (theta - mean) ** 2)
    denom = np.sum(w) - np.sum(w**2) / np.sum(w)
    return float(max(0.0, (q - (len(theta) - 1)) / denom)) if denom > 0 else 0.0


def _raw_terms(
    codes: np.ndarray, n_values: int, partner: np.ndarray, y: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Per value: label and prediction totals, partners, rows, ratio and the s.e. of its log.

    The s.e. is that of the **contrast** ``log(R_v) - log(R)`` (``R`` the ratio over all rows),
    partner-clustered delta method: partner ``p``'s influence is
    ``(Y_pv - R_v M_pv) / Y_v - (Y_p - R M_p) / Y``. For a partner attribute (tier) the values
    hold disjoint partners; for the onboarding age every partner is in every value, and its
    common level cancels in the contrast, which is what a per-value factor has to beat.
    """
    keep = codes >= 0
    c, p, yy, mm = codes[keep], partner[keep], y[keep], m[keep]
    label = np.bincount(c, yy, n_values)
    pred = np.bincount(c, mm, n_values)
    rows = np.bincount(c, minlength=n_values)
    n_part = int(partner.max()) + 1
    total_y, total_m = y.sum(), m.sum()
    g = np.bincount(partner, y, n_part) - total_y / total_m * np.bincount(partner, m, n_part)
    g /= total_y
    present = np.bincount(partner, minlength=n_part) > 0
    n_eff = int(present.sum())
    # partner sums per value
    pair = c.astype(np.int64) * n_part + p
    uniq, inv = np.unique(pair, return_inverse=True)
    y_p, m_p = np.bincount(inv, yy), np.bincount(inv, mm)
    c_p, p_p = uniq // n_part, uniq % n_part
    partners = np.bincount(c_p, minlength=n_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = label / pred
        d = (y_p - ratio[c_p] * m_p) / label[c_p]
        cross = np.bincount(c_p, d**2 - 2 * d * g[p_p], n_values)
        var = (np.sum(g[present] ** 2) + cross) * n_eff / max(n_eff - 1, 1)
        se_log = np.sqrt(np.maximum(var, 0.0))
    return label, pred, partners, rows, ratio, se_log


def _balance(
    label: np.ndarray, pred: np.ndarray, weight: np.ndarray, rest: float, total: float
) -> float:
    """The overall log factor ``a`` at which one column's shrunk factors match the label total.

    With ``b_v = w_v (log(Y_v / M_v) - a)`` the predicted total is
    ``sum_v M_v^(1 - w_v) Y_v^w_v e^(a (1 - w_v)) + rest e^a`` (``rest``: prediction mass of
    rows without a factor), increasing and log-convex in ``a``: solved by Newton's method.
    """
    log_terms = (1 - weight) * np.log(pred) + weight * np.log(label)
    slopes = np.append(1 - weight, 1.0)
    log_terms = np.append(log_terms, np.log(rest) if rest > 0 else -np.inf)
    target = np.log(total)
    a = target - np.log(pred.sum() + rest)
    for _ in range(200):
        z = log_terms + slopes * a
        top = z.max()
        share = np.exp(z - top)
        h = top + np.log(share.sum()) - target
        slope = float((share * slopes).sum() / share.sum())
        if slope < 1e-12:
            break  # every value carries its own raw factor: a is immaterial
        step = h / slope
        a -= step
        if abs(step) < 1e-15:
            break
    return float(a)


def _inputs(segments, partner_id, y, pred, columns, *, out_of_fold: bool):
    """Checked ``(y, pred, partner codes, {column: (value codes, value texts)})``.

    Raises:
        ValueError: Lengths differ, negative labels, non-positive predictions, or no revenue.
    """
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    name, rows = ("oof", "the out-of-fold rows") if out_of_fold else ("pred", "the rows")
    if not (len(pred) == len(partner_id) == len(segments) == len(y)):
        raise ValueError(f"segments, partner_id, y and {name} must have the same length")
    if (y < 0).any() or not np.isfinite(y).all():
        raise ValueError("labels must be finite and non-negative")
    if (pred <= 0).any() or not np.isfinite(pred).all():
        what = "out-of-fold predictions" if out_of_fold else "predictions"
        raise ValueError(f"{what} must be finite and positive")
    if y.sum() <= 0:
        raise ValueError(f"no revenue among {rows}")
    partner = pd.factorize(np.asarray(partner_id))[0].astype(np.int64)
    encoded = {}
    for col in columns:
        codes, uniques = pd.factorize(segments[col].to_numpy(dtype=object), sort=True)
        encoded[col] = (codes, [str(u) for u in uniques])
    return y, pred, partner, encoded


def _row_offset(encoded: dict, logf: dict, n: int, skip: str | None = None) -> np.ndarray:
    """Per-row sum of the log factors of every column but ``skip`` (missing values: 0)."""
    out = np.zeros(n)
    for col, (codes, _) in encoded.items():
        if col != skip and len(logf[col]):  # a column missing on every row: no factor, no term
            out += np.where(codes >= 0, logf[col][np.maximum(codes, 0)], 0.0)
    return out


def fit_segment_factors(
    segments: pd.DataFrame,
    partner_id: np.ndarray,
    y: np.ndarray,
    oof: np.ndarray,
    columns: tuple[str, ...] | list[str],
    *,
    min_partners: int = 30,
    prior_sd: float | None = None,
    max_sweeps: int = 100,
    tol: float = 1e-12,
) -> SegmentFactors:
    """Fit the overall and shrunk per-segment factors (see the module docstring).

    Args:
        segments: Segment columns per row (values compared as text; missing = no segment).
        partner_id: (n,) partner of each row (the clustering unit of the variance).
        y: (n,) realised revenue (>= 0).
        oof: (n,) out-of-fold predictions (> 0), the rows to use only.
        columns: Segment columns of ``segments`` to fit, in backfitting order.
        min_partners: Values with fewer partners keep factor 1; at least 2 (as
            ``train.segment_recalibration_min_partners``). A value of one partner can have a
            contrast s.e. near 0, so a weight near 1: with rows of no revenue outside the
            factored values, the balance then has no finite overall factor (it ran to 7e-13,
            its values' factors to 4e5, and stopped at ``max_sweeps``).
        prior_sd: Standard deviation of the log factors across a column's values; None
            estimates it per column (DerSimonian-Laird).
        max_sweeps: Backfitting sweeps at most.
        tol: Stop when no log factor moves by more than this in a sweep.

    Returns:
        The factors; ``overall`` is ``sum y / sum oof`` when ``columns`` is empty. A fit
        stopped by ``max_sweeps`` with factors still moving is returned as it stands, its
        ``change`` telling how far from settled (:attr:`SegmentFactors.settled`).

    Raises:
        ValueError: Lengths differ, negative labels, non-positive predictions, no revenue, or
            ``min_partners`` below 2.
    """
    if min_partners < 2:
        raise ValueError(f"min_partners must be at least 2, got {min_partners}")
    y, oof, partner, encoded = _inputs(segments, partner_id, y, oof, columns, out_of_fold=True)
    n = len(y)
    logf = {col: np.zeros(len(encoded[col][1])) for col in columns}

    def row_offset(skip: str | None = None) -> np.ndarray:
        return _row_offset(encoded, logf, n, skip)

    log_a = np.log(y.sum() / oof.sum())
    tau: dict[str, float] = {}
    weights = {col: np.zeros(len(encoded[col][1])) for col in columns}
    sweeps, moved = 0, 0.0
    for sweeps in range(1, max_sweeps + 1):  # noqa: B007 (reported)
        moved = 0.0
        for col in columns:
            codes, values = encoded[col]
            base = oof * np.exp(row_offset(skip=col))  # every factor but the overall and col's
            label, pred, partners, _, ratio, se_log = _raw_terms(
                codes, len(values), partner, y, base
            )
            ok = (partners >= min_partners) & (ratio > 0) & np.isfinite(se_log) & (se_log > 0)
            # log(Y_v / M_v) without the overall term; se_log and tau do not depend on it
            theta0 = np.where(ok, np.log(np.where(ok, ratio, 1.0)), 0.0)
            if prior_sd is not None:
                tau2 = prior_sd**2
            else:
                tau2 = dersimonian_laird(theta0[ok], se_log[ok] ** 2)
            tau[col] = float(np.sqrt(tau2))
            weight = np.where(ok, tau2 / (tau2 + np.where(ok, se_log, 1.0) ** 2), 0.0)
            weights[col] = weight
            new_a = _balance(label[ok], pred[ok], weight[ok], base.sum() - pred[ok].sum(), y.sum())
            new = np.where(ok, weight * (theta0 - new_a), 0.0)
            moved = max(moved, float(np.max(np.abs(new - logf[col]), initial=0.0)))
            moved = max(moved, abs(new_a - log_a))
            logf[col], log_a = new, new_a
        if not columns or moved <= tol:
            break

    records = []
    for col in columns:
        codes, values = encoded[col]
        m = oof * np.exp(log_a + row_offset(skip=col))
        label, _, partners, rows, ratio, se_log = _raw_terms(codes, len(values), partner, y, m)
        oof_total = np.bincount(codes[codes >= 0], oof[codes >= 0], len(values))
        for i, value in enumerate(values):
            records.append(
                {
                    "column": col,
                    "value": value,
                    "partners": int(partners[i]),
                    "rows": int(rows[i]),
                    "label_total": float(label[i]),
                    "oof_total": float(oof_total[i]),
                    "raw_factor": float(ratio[i]),
                    "se_log": float(se_log[i]),
                    "weight": float(weights[col][i]),
                    "factor": float(np.exp(logf[col][i])),
                }
            )
    table = pd.DataFrame.from_records(records, columns=list(TABLE_COLUMNS))
    return SegmentFactors(
        overall=float(np.exp(log_a)),
        factors={
            col: {v: float(np.exp(f)) for v, f in zip(encoded[col][1], logf[col], strict=True)}
            for col in columns
        },
        tau=tau,
        table=table,
        sweeps=sweeps if columns else 0,
        change=moved if columns else 0.0,
    )


@dataclass(frozen=True)
class BalanceFactors:
    """:func:`fit_balance_factors`' result: centred factors per value and the common level.

    Attributes:
        factors: Column -> value -> factor (> 0); each fitted column's mean factor over the
            raked rows (weighted by their mass without it) is 1, and values kept, missing or
            unseen get 1.
        level: The factor every row gets besides its values' (> 0; 1 when nothing was raked).
    """

    factors: dict[str, dict[str, float]]
    level: float = 1.0

    def multiplier(self, segments: pd.DataFrame) -> np.ndarray:
        """Each row's balance: the level times its values' factors (unknown values: 1)."""
        return row_factors(self.factors, segments, start=self.level)


def fit_balance_factors(
    segments: pd.DataFrame,
    partner_id: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    columns: tuple[str, ...] | list[str],
    *,
    min_partners: int = 30,
    max_sweeps: int = 100,
    tol: float = 1e-12,
) -> BalanceFactors:
    """In-sample balance factors per value of each column, relative to the overall ratio.

    A shrunk tweedie booster does not keep a segment's in-sample total: its leaves balance
    ``(y - mu) mu^(1 - p)``, not ``y - mu``, and its shrunk steps stop short of a segment's
    level, so low-value segments end over-predicted and high-value ones under-predicted on the
    training rows themselves (README, "Remaining goals"). These factors restore the balance of
    a log-linear model with one term per value (raking, i.e. iterative proportional fitting):
    at the fixed point ``sum y / sum(pred * f)`` is the overall ratio ``sum y / sum pred`` in
    every value of every column, so the overall level (the out-of-fold recalibration's) is
    kept, and with every value fitted the prediction total is unchanged.

    The raking runs on the rows whose value is fitted in every column (that has a fitted
    value). A row of a value that keeps factor 1 (too few partners, no revenue) or of no
    value used to enter the other columns' totals, and since a tier's and a type's factors
    can trade a common scale without moving any fitted row, that row's value alone pinned
    the scale: 19 partners of a tier earning 4% of the overall ratio drew every type factor
    toward 0.06 and every other tier's toward 20 (0.37-0.60 and ~2 after 100 sweeps, still
    moving; the rows of that tier, and of any tier unseen at scoring, carried the type
    factor alone). The scale is now fixed by centring: every fitted column's mean factor
    over the raked rows, each weighted by its predicted mass without that column's factor,
    is 1, and the common level is returned apart (:attr:`BalanceFactors.level`, applied to
    every row). A value keeping factor 1, a missing one and one unseen at scoring thus count
    as an average value of their column: had the raked rows' values of a column been unknown,
    their total would be the same. (Until 2026-12-07 the last column carried the level and
    the weights were the balanced mass, which leans toward the larger factors: in the test's
    case an unseen partner type got 1.7% less than an average one.)

    Args:
        segments: Segment columns per row (values compared as text; missing = factor 1).
        partner_id: (n,) partner of each row (values with fewer partners keep factor 1).
        y: (n,) realised revenue (>= 0), the training rows.
        pred: (n,) in-sample predictions (> 0) of the fitted head.
        columns: Columns of ``segments`` to balance, in raking order.
        min_partners: Values with fewer partners, or no revenue, keep factor 1.
        max_sweeps: Raking sweeps at most.
        tol: Stop when no log factor moves by more than this in a sweep.

    Returns:
        The factors (column -> value -> factor > 0, every non-missing value seen) and the
        level; a row's factor is the level times its values' factors.

    Raises:
        ValueError: Lengths differ, negative labels, non-positive predictions, or no revenue.
    """
    y, pred, partner, encoded = _inputs(segments, partner_id, y, pred, columns, out_of_fold=False)
    target = y * (pred.sum() / y.sum())  # labels on the predictions' scale
    logf, active = {}, {}
    for col in columns:
        codes, values = encoded[col]
        k, seen = len(values), codes >= 0
        pairs = pd.DataFrame({"value": codes[seen], "partner": partner[seen]}).drop_duplicates()
        active[col] = np.bincount(pairs["value"].to_numpy(), minlength=k) >= min_partners
        logf[col] = np.zeros(k)
    while True:  # the raked rows, and the values with revenue among them (a fixed point)
        raked = np.ones(len(y), dtype=bool)
        for col in columns:
            codes = encoded[col][0]
            if active[col].any():  # a column without a fitted value constrains no row
                raked &= (codes >= 0) & active[col][np.maximum(codes, 0)]
        labels = {}
        for col in columns:
            codes, values = encoded[col]
            on = raked & (codes >= 0)
            labels[col] = np.bincount(codes[on], target[on], len(values))
        kept = {col: active[col] & (labels[col] > 0) for col in columns}
        if all((kept[col] == active[col]).all() for col in columns):
            break
        active = kept

    for _ in range(max_sweeps if raked.any() else 0):
        moved = 0.0
        for col in columns:
            codes, values = encoded[col]
            m = pred * np.exp(_row_offset(encoded, logf, len(y), skip=col))
            on = raked & (codes >= 0)
            mass = np.bincount(codes[on], m[on], len(values))
            ok = active[col] & (mass > 0)
            ratio = np.where(ok, labels[col], 1.0) / np.where(ok, mass, 1.0)
            new = np.where(ok, np.log(ratio), 0.0)
            moved = max(moved, float(np.max(np.abs(new - logf[col]), initial=0.0)))
            logf[col] = new
        if moved <= tol:
            break
    shift = 0.0
    if raked.any():
        # centre every fitted column on its mean factor over the raked rows, weighted by their
        # mass without it (the other columns' centring scales that mass, not its mean); the
        # level takes the sum: no raked row's product moves
        for col in columns:
            if active[col].any():
                codes = encoded[col][0][raked]
                mass = (pred * np.exp(_row_offset(encoded, logf, len(y), skip=col)))[raked]
                level = np.log(np.sum(mass * np.exp(logf[col][codes])) / mass.sum())
                logf[col] = np.where(active[col], logf[col] - level, 0.0)
                shift += level
    factors = {
        col: {v: float(np.exp(f)) for v, f in zip(encoded[col][1], logf[col], strict=True)}
        for col in columns
    }
    return BalanceFactors(factors, float(np.exp(shift)))


def cohort_trend(
    signed_at: pd.Series | np.ndarray,
    partner_id: pd.Series | np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    blocks: int = 5,
) -> tuple[float, float]:
    """Out-of-fold cohort drift: the trend of ``log(sum y / sum pred)`` over signing dates.

    Partners are cut into ``blocks`` consecutive groups by signing date (ties by id, a
    partner's snapshots in one group). Each group's log ratio has the partner-clustered
    delta-method variance ``sum_p (y_p - R pred_p)^2 / (sum y)^2`` (``y_p``, ``pred_p`` the
    partner's sums, ``R`` the group's ratio); the slope is the weighted least-squares fit of
    the log ratios on the groups' mean signing date in years. On random partner folds a
    program whose cohorts are exchangeable has slope ~0; when newer cohorts earn more than
    features show, newer groups are under-predicted (slope > 0).

    Returns:
        (slope per year, its s.e.); NaN when fewer than 3 groups of at least 2 partners have
        revenue and predictions.
    """
    frame = pd.DataFrame(
        {
            "p": np.asarray(partner_id).astype(str),
            "t": pd.to_datetime(np.asarray(signed_at)),
            "y": np.asarray(y, dtype=float),
            "m": np.asarray(pred, dtype=float),
        }
    )
    per = frame.groupby("p", sort=False).agg(t=("t", "first"), y=("y", "sum"), m=("m", "sum"))
    per = per.reset_index().sort_values(["t", "p"], kind="stable").reset_index(drop=True)
    n = len(per)
    if n == 0:
        return float("nan"), float("nan")
    per["b"] = np.floor(np.arange(n) * blocks / n).astype(int)
    years = (per["t"] - per["t"].min()).dt.total_seconds().to_numpy() / (365.25 * 86400)
    per["years"] = years
    r, v, t = [], [], []
    for _, g in per.groupby("b", sort=True):
        sy, sm = g["y"].sum(), g["m"].sum()
        if len(g) < 2 or sy <= 0 or sm <= 0:  # one partner: no variance to weigh it by
            continue
        ratio = sy / sm
        var = float(np.sum((g["y"] - ratio * g["m"]) ** 2)) / sy**2
        if var <= 0:
            continue
        r.append(np.log(ratio))
        v.append(var)
        t.append(g["years"].mean())
    if len(r) < 3:
        return float("nan"), float("nan")
    r, w, t = np.array(r), 1.0 / np.array(v), np.array(t)
    t_bar, r_bar = np.sum(w * t) / w.sum(), np.sum(w * r) / w.sum()
    sxx = float(np.sum(w * (t - t_bar) ** 2))
    if sxx <= 0:
        return float("nan"), float("nan")
    slope = float(np.sum(w * (t - t_bar) * (r - r_bar)) / sxx)
    return slope, float(np.sqrt(1.0 / sxx))
