"""Drift statistics between a reference profile and a current batch profiled on its bins.

- PSI (population stability index) of the non-missing values on the reference's quantile bins
  (numeric) or categories (categorical), with 0.5 additive smoothing of every cell so empty
  cells stay finite. Missing values are checked separately (missing-rate change): inside the
  PSI a mostly-missing column would hide a complete shift of its present values.
- Numeric columns: the two-sample Kolmogorov-Smirnov statistic evaluated at the reference's bin
  edges (grouped KS; never larger than the exact statistic, so its p-value is conservative)
  with the asymptotic Kolmogorov distribution, and the chi-square test on the same bins (KS is
  weak in the tails, where a shift of the few non-zero values of a count shows); the smaller
  p-value, doubled, is the column's p-value.
- Categorical columns: the chi-square test of homogeneity of the reference and batch counts
  (categories unseen in training form their own cells).
- Effective sample sizes: a partner's snapshots at several onboarding ages are one draw, not
  several, so the tests divide counts by the rows-per-partner of each side (design effect).
- Multiple testing: p-values are Benjamini-Hochberg adjusted over every drift test of the run
  (features and predictions x segments, several hundred tests).

A drift check warns or alarms only when the PSI passes its threshold and the adjusted p-value
is below ``alpha``: PSI says the shift matters, the test says it is not sampling noise (small
segments have large PSI by chance).
"""

from __future__ import annotations

import numpy as np

from partnerscore.features.checks import Check
from partnerscore.features.config import MonitorConfig
from partnerscore.features.profile import ALL, design_effect


def psi(ref_counts, cur_counts, smoothing: float = 0.5) -> float:
    """Population stability index sum((c - r) * ln(c / r)) of two count vectors.

    Args:
        ref_counts: Reference counts per cell.
        cur_counts: Current counts per cell (same cells).
        smoothing: Added to every cell before normalising.
    """
    r = np.asarray(ref_counts, dtype=float) + smoothing
    c = np.asarray(cur_counts, dtype=float) + smoothing
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def grouped_ks(ref_counts, cur_counts) -> tuple[float, float]:
    """Two-sample KS statistic at the bin edges and its asymptotic p-value.

    Args:
        ref_counts: Reference counts per ordered bin (missing values excluded).
        cur_counts: Current counts per bin.

    Returns:
        (D, p-value); (nan, nan) when either side is empty.
    """
    r = np.asarray(ref_counts, dtype=float)
    c = np.asarray(cur_counts, dtype=float)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    en = np.sqrt(n * m / (n + m))
    from scipy import stats  # ~1 s of imports that scoring (which needs only psi) never uses

    return d, float(stats.kstwobign.sf(d * en))


def chi_square(ref_counts, cur_counts) -> tuple[float, float]:
    """Chi-square test of homogeneity of two count vectors (all-zero cells dropped)."""
    table = np.vstack([np.asarray(ref_counts, float), np.asarray(cur_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    from scipy import stats

    stat, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(stat), float(p)


def _cells(ref: dict, cur: dict, spec: dict) -> tuple[list, list]:
    """(reference cells, current cells) of one column's non-missing values."""
    if spec["kind"] == "numeric":
        return list(ref["counts"]), list(cur["counts"])
    others = sorted(set(ref.get("other", {})) | set(cur.get("other", {})))
    r = [*ref["counts"], *(ref.get("other", {}).get(k, 0) for k in others)]
    c = [*cur["counts"], *(cur.get("other", {}).get(k, 0) for k in others)]
    return r, c


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in the input order.

    When nothing drifted every rejection is false, and then controlling the false discovery
    rate at alpha is controlling the chance of any false alarm at alpha; when some columns did
    drift it is far less strict than Bonferroni.
    """
    p = np.asarray(p_values, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def psi_check(
    name: str,
    subject: str,
    segment: str,
    value: float | None,
    p_value: float | None,
    detail: str,
    config: MonitorConfig,
) -> Check:
    """One PSI drift check against the monitor's thresholds.

    It warns (alarms) when the PSI reaches ``psi_warn`` (``psi_alarm``) and the adjusted
    p-value is below ``alpha``: a large PSI on few rows alone is noise. Without a value (too
    few rows on either side) the check is skipped and ``detail`` gives the sizes compared.
    """
    if value is None:
        status, detail = "skip", f"too few rows to compare ({detail})"
    else:
        significant = p_value < config.alpha
        status = "ok"
        if significant and value >= config.psi_alarm:
            status = "alarm"
        elif significant and value >= config.psi_warn:
            status = "warn"
    return Check(
        name,
        "drift",
        subject,
        segment,
        "psi",
        value,
        config.psi_warn,
        config.psi_alarm,
        p_value,
        status,
        detail,
    )


def drift_checks(reference: dict, current: dict, config: MonitorConfig) -> list[Check]:
    """PSI + distribution-test checks of every column in every group, and missing-rate checks.

    Args:
        reference: Reference profile (:func:`partnerscore.features.profile.build_profile`).
        current: The batch profiled on the reference's bins
            (:func:`partnerscore.features.profile.current_profile`).
        config: Thresholds.

    Returns:
        One ``drift.psi.<column>.<group>`` check per column and group (skipped when either side
        has fewer than ``min_rows`` rows) and one ``quality.missing_rate.<column>`` check per
        column on the whole batch.
    """
    rows = []
    deff_ref, deff_cur = design_effect(reference), design_effect(current)
    for group, cur_cols in current["groups"].items():
        ref_cols = reference["groups"].get(group)
        for column, cur in cur_cols.items():
            spec = reference["columns"][column]
            ref = ref_cols.get(column) if ref_cols else None
            n_ref = ref["n"] - ref["missing"] if ref else 0
            n_cur = cur["n"] - cur["missing"]
            sizes = f"{n_ref} vs {n_cur} values"
            if n_ref < config.min_rows or n_cur < config.min_rows:
                rows.append((group, column, None, None, None, sizes))
                continue
            tr, tc = _cells(ref, cur, spec)
            value = psi(tr, tc)
            # effective counts: a partner's snapshots at several ages are one draw, not several
            er, ec = np.asarray(tr, float) / deff_ref, np.asarray(tc, float) / deff_cur
            chi, p_chi = chi_square(er, ec)
            if spec["kind"] == "numeric":
                d, p_ks = grouped_ks(er, ec)
                p = min(1.0, 2 * min(p_chi, p_ks if np.isfinite(p_ks) else 1.0))
                test = f"KS D {d:.3f}, chi-square {chi:.1f}"
            else:
                p, test = p_chi, f"chi-square {chi:.1f}"
            rows.append((group, column, value, p, test, sizes))
    tested = [i for i, r in enumerate(rows) if r[3] is not None]
    q_values = dict(zip(tested, benjamini_hochberg([rows[i][3] for i in tested]), strict=True))
    checks = []
    for i, (group, column, value, _, test, sizes) in enumerate(rows):
        kind = reference["columns"][column]["kind"]
        name = f"drift.psi.{column}.{group}"
        if value is None:
            checks.append(psi_check(name, column, group, None, None, sizes, config))
            continue
        q = float(q_values[i])
        detail = (
            f"{kind} {column} in {group}: PSI {value:.3f}, {test} (adjusted p {q:.2g}, {sizes})"
        )
        checks.append(psi_check(name, column, group, value, q, detail, config))
    ref_all, cur_all = reference["groups"][ALL], current["groups"].get(ALL, {})
    for column, cur in cur_all.items():
        ref = ref_all.get(column)
        if ref is None or not ref["n"] or not cur["n"]:
            continue
        before = ref["missing"] / ref["n"]
        now = cur["missing"] / cur["n"]
        change = abs(now - before)
        status = "skip" if cur["n"] < config.min_rows else "ok"
        if status == "ok" and change >= config.missing_alarm:
            status = "alarm"
        elif status == "ok" and change >= config.missing_warn:
            status = "warn"
        checks.append(
            Check(
                f"quality.missing_rate.{column}",
                "quality",
                column,
                ALL,
                "missing_rate_change",
                change,
                config.missing_warn,
                config.missing_alarm,
                None,
                status,
                f"{column}: missing {before:.1%} in training, {now:.1%} in the batch",
            )
        )
    return checks


def unseen_category_checks(reference: dict, current: dict, config: MonitorConfig) -> list[Check]:
    """Share of batch rows holding a category of a categorical column never seen in training."""
    checks = []
    for column, spec in reference["columns"].items():
        cur = current["groups"].get(ALL, {}).get(column)
        if spec["kind"] != "categorical" or cur is None or not cur["n"]:
            continue
        other = cur.get("other", {})
        share = sum(other.values()) / cur["n"]
        status = "ok"
        if share >= config.unseen_alarm:
            status = "alarm"
        elif share > config.unseen_warn:
            status = "warn"
        listed = ", ".join(f"{k!r} ({v})" for k, v in other.items()) or "none"
        checks.append(
            Check(
                f"quality.unseen_categories.{column}",
                "quality",
                column,
                ALL,
                "unseen_share",
                share,
                config.unseen_warn,
                config.unseen_alarm,
                None,
                status,
                f"{column}: categories never seen in training: {listed}",
            )
        )
    return checks
