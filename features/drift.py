"""Drift statistics between a reference profile and a current batch profiled on its bins.

- PSI (population stability index) on the reference's quantile bins (numeric) or categories
  (categorical), with a missing-value bin and 0.5 additive smoothing of every cell so empty
  cells stay finite.
- Numeric columns: the two-sample Kolmogorov-Smirnov statistic evaluated at the reference's bin
  edges (grouped KS; never larger than the exact statistic, so its p-value is conservative),
  with the asymptotic Kolmogorov distribution.
- Categorical columns: the chi-square test of homogeneity of the reference and batch counts
  (categories unseen in training form their own cells).

A drift check warns or alarms only when the PSI passes its threshold and the test's
Bonferroni-adjusted p-value is below ``alpha``: PSI says the shift matters, the test says it is
not sampling noise (small segments have large PSI by chance).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from partnerscore.features.checks import Check
from partnerscore.features.config import MonitorConfig
from partnerscore.features.profile import ALL


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
    return d, float(stats.kstwobign.sf(d * en))


def chi_square(ref_counts, cur_counts) -> tuple[float, float]:
    """Chi-square test of homogeneity of two count vectors (all-zero cells dropped)."""
    table = np.vstack([np.asarray(ref_counts, float), np.asarray(cur_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    stat, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(stat), float(p)


def _cells(ref: dict, cur: dict, spec: dict) -> tuple[list, list, list, list]:
    """(PSI ref cells, PSI cur cells, test ref cells, test cur cells) of one column."""
    if spec["kind"] == "numeric":
        r, c = list(ref["counts"]), list(cur["counts"])
        return [*r, ref["missing"]], [*c, cur["missing"]], r, c
    others = sorted(set(ref.get("other", {})) | set(cur.get("other", {})))
    r = [*ref["counts"], *(ref.get("other", {}).get(k, 0) for k in others)]
    c = [*cur["counts"], *(cur.get("other", {}).get(k, 0) for k in others)]
    return [*r, ref["missing"]], [*c, cur["missing"]], r, c


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
    for group, cur_cols in current["groups"].items():
        ref_cols = reference["groups"].get(group)
        for column, cur in cur_cols.items():
            spec = reference["columns"][column]
            ref = ref_cols.get(column) if ref_cols else None
            if ref is None or ref["n"] < config.min_rows or cur["n"] < config.min_rows:
                n_ref = ref["n"] if ref else 0
                rows.append((group, column, None, None, None, f"{n_ref} vs {cur['n']} rows"))
                continue
            pr, pc, tr, tc = _cells(ref, cur, spec)
            value = psi(pr, pc)
            if spec["kind"] == "numeric":
                stat, p = grouped_ks(tr, tc)
                test = "KS"
            else:
                stat, p = chi_square(tr, tc)
                test = "chi-square"
            rows.append((group, column, value, p, (test, stat), f"{ref['n']} vs {cur['n']} rows"))
    tested = sum(1 for r in rows if r[3] is not None and np.isfinite(r[3]))
    checks = []
    for group, column, value, p, test, sizes in rows:
        kind = reference["columns"][column]["kind"]
        name = f"drift.psi.{column}.{group}"
        if value is None:
            checks.append(
                Check(
                    name,
                    "drift",
                    column,
                    group,
                    "psi",
                    None,
                    config.psi_warn,
                    config.psi_alarm,
                    None,
                    "skip",
                    f"too few rows to compare ({sizes})",
                )
            )
            continue
        p_adj = min(1.0, p * max(tested, 1)) if np.isfinite(p) else 1.0
        significant = p_adj < config.alpha
        status = "ok"
        if significant and value >= config.psi_alarm:
            status = "alarm"
        elif significant and value >= config.psi_warn:
            status = "warn"
        test_name, stat = test
        detail = (
            f"{kind} {column} in {group}: PSI {value:.3f}, {test_name} {stat:.3f} "
            f"(adjusted p {p_adj:.2g}, {sizes})"
        )
        checks.append(
            Check(
                name,
                "drift",
                column,
                group,
                "psi",
                value,
                config.psi_warn,
                config.psi_alarm,
                p_adj,
                status,
                detail,
            )
        )
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
