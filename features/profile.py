"""Reference profiles: the distribution of every feature and prediction, overall and by segment.

A profile is a plain JSON-able dict, small enough to log as an MLflow artifact of the model
version, so monitoring never needs the training data again:

- ``columns``: per column its ``kind``; numeric columns carry the bin ``edges`` (inner quantile
  edges of the reference, unique), ``min``/``max``, ``quantiles`` (21 points) and whether they
  are non-negative (their ranges are compared on a log1p scale); categorical columns carry the
  reference ``categories``.
- ``groups``: ``"all"`` and one group per segment value (``tier=gold``, ``region=NA``,
  ``partner_type=msp``, ``age_band=31-60``), each mapping column -> ``{"n", "missing",
  "counts"}`` with counts per numeric bin (bin ``i`` holds ``edges[i-1] < x <= edges[i]``) or
  per reference category (values outside the reference categories are counted in ``other``).

The same functions profile a current batch on the reference's bins, which is what
:mod:`partnerscore.features.drift` compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PROFILE_VERSION = 1
SEGMENTS = ("tier", "region", "partner_type", "age_band")
PREDICTIONS = ("pred_revenue", "pred_engagement")
ALL = "all"
N_BINS = 10
QUANTILE_POINTS = np.linspace(0.0, 1.0, 21)


def age_band(age_days, ages: Sequence[int]) -> np.ndarray:
    """Onboarding-age band of each age: ``0-30``, ``31-60``, ..., then ``>180`` (out of scope).

    Args:
        age_days: Ages in days (array-like; missing ages give ``unknown``).
        ages: Trained onboarding ages, e.g. (30, 60, 90, 180).
    """
    ages = sorted(int(a) for a in ages)
    values = pd.to_numeric(pd.Series(np.asarray(age_days, dtype=float)), errors="coerce")
    labels = []
    low = 0
    for a in ages:
        labels.append(f"{low}-{a}")
        low = a + 1
    labels.append(f">{ages[-1]}")
    # band i holds ages in (ages[i-1], ages[i]]; ages are whole days, fractions round up
    idx = np.searchsorted(np.asarray(ages, dtype=float), np.ceil(values.to_numpy()), side="left")
    out = np.asarray(labels, dtype=object)[np.minimum(idx, len(labels) - 1)]
    out[values.isna().to_numpy()] = "unknown"
    return out


def segment_frame(frame: pd.DataFrame, ages: Sequence[int]) -> pd.DataFrame:
    """The segment columns of a frame (tier, region, partner_type as text; age_band from age)."""
    out = pd.DataFrame(index=frame.index)
    for name in SEGMENTS:
        if name == "age_band":
            source = frame["age_days"] if "age_days" in frame else pd.Series(np.nan, frame.index)
            out[name] = age_band(source, ages)
        elif name in frame:
            col = frame[name]
            out[name] = col.astype(object).where(col.notna(), "unknown").astype(str)
        else:
            out[name] = "unknown"
    return out


def numeric_column_spec(values: pd.Series, bins: int = N_BINS) -> dict:
    """Bin edges and range of one numeric reference column."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"kind": "numeric", "edges": [], "min": None, "max": None, "quantiles": []}
    probs = np.linspace(0, 1, bins + 1)[1:-1]
    inner = np.quantile(x, probs)
    # a point mass (zeros of a count, a default score) swallows most deciles: bin the values
    # off the mass by their own deciles too, so shifts among them stay visible
    values, counts = np.unique(x, return_counts=True)
    mode = values[np.argmax(counts)]
    rest = x[x != mode]
    if counts.max() >= x.size / bins and rest.size >= bins:
        inner = np.concatenate([inner, [mode], np.quantile(rest, probs)])
    edges = np.unique(inner)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "min": float(x.min()),
        "max": float(x.max()),
        "quantiles": np.quantile(x, QUANTILE_POINTS).tolist(),
        "nonnegative": bool(x.min() >= 0),
    }


def categorical_column_spec(values: pd.Series) -> dict:
    """Reference categories of one categorical column (sorted)."""
    cats = sorted(values.dropna().astype(str).unique().tolist())
    return {"kind": "categorical", "categories": cats}


def column_counts(values: pd.Series, spec: dict) -> dict:
    """Counts of one column on a reference column spec's bins or categories.

    Returns:
        ``{"n": rows, "missing": missing values, "counts": [...]}``; categorical counts follow
        ``spec["categories"]`` plus ``"other": {category: count}`` for values outside them.
    """
    n = int(len(values))
    if spec["kind"] == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        idx = np.searchsorted(np.asarray(spec["edges"], dtype=float), x[ok], side="left")
        counts = np.bincount(idx, minlength=len(spec["edges"]) + 1)
        return {"n": n, "missing": int(n - ok.sum()), "counts": counts.astype(int).tolist()}
    text = values.astype(object).where(values.notna(), None)
    present = text.dropna().astype(str)
    freq = present.value_counts()
    cats = spec["categories"]
    counts = [int(freq.get(c, 0)) for c in cats]
    other = {str(k): int(v) for k, v in freq.items() if k not in set(cats)}
    return {
        "n": n,
        "missing": int(n - len(present)),
        "counts": counts,
        "other": dict(sorted(other.items())),
    }


def _codes(values: pd.Series, spec: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Cell of every value: bin or category index, -1 missing, -2 outside the categories."""
    if spec["kind"] == "numeric":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(x)
        idx = np.searchsorted(np.asarray(spec["edges"], dtype=float), np.where(ok, x, 0.0))
        return np.where(ok, idx, -1), None
    missing = values.isna().to_numpy()
    text = values.astype(object).where(~missing, "").astype(str).to_numpy(dtype=object)
    cat = pd.Categorical(text, categories=spec["categories"]).codes.astype(np.int64)
    return np.where(missing, -1, np.where(cat < 0, -2, cat)), text


def profile_groups(
    frame: pd.DataFrame, columns: dict[str, dict], ages: Sequence[int]
) -> dict[str, dict[str, dict]]:
    """Counts overall (``all``) and for every segment value present in ``frame``.

    Same counts as :func:`column_counts` of every column on each group's rows
    (``tests/features/test_drift.py`` holds them equal), with every column coded to its cells
    once instead of once per group.
    """
    segments = segment_frame(frame, ages)
    coded = {name: _codes(frame[name], spec) for name, spec in columns.items() if name in frame}

    def counts(mask: np.ndarray | None) -> dict[str, dict]:
        out = {}
        for name, (codes, text) in coded.items():
            spec = columns[name]
            c = codes if mask is None else codes[mask]
            cells = len(spec["edges"]) + 1 if spec["kind"] == "numeric" else len(spec["categories"])
            entry = {
                "n": int(c.size),
                "missing": int((c == -1).sum()),
                "counts": np.bincount(c[c >= 0], minlength=cells).astype(int).tolist(),
            }
            if text is not None:
                entry["other"] = {}
                if (c == -2).any():
                    t = text if mask is None else text[mask]
                    other = pd.Series(t[c == -2]).value_counts()
                    entry["other"] = dict(sorted((str(k), int(v)) for k, v in other.items()))
            out[name] = entry
        return out

    groups = {ALL: counts(None)}
    for seg in SEGMENTS:
        values = segments[seg].to_numpy(dtype=object)
        for value in sorted(set(values.tolist())):
            groups[f"{seg}={value}"] = counts(values == value)
    return groups


def _partners(frame: pd.DataFrame) -> int:
    """Distinct partners of a frame (rows when it has no partner_id)."""
    return int(frame["partner_id"].nunique()) if "partner_id" in frame else int(len(frame))


def design_effect(profile: dict) -> float:
    """Rows per partner of a profile (at least 1).

    Snapshots of one partner at several ages are not independent draws, so the tests count
    ``rows / design_effect`` effective observations.
    """
    return max(1.0, profile["rows"] / max(profile.get("partners") or profile["rows"], 1))


def build_profile(
    frame: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    ages: Sequence[int],
    bins: int = N_BINS,
) -> dict:
    """The reference profile of a frame (features plus ``pred_*`` columns).

    Args:
        frame: Reference rows: features, ``age_days``, segment columns and predictions.
        numeric: Numeric columns to profile (features and predictions).
        categorical: Categorical columns to profile.
        ages: Trained onboarding ages (defines the age bands).
        bins: Quantile bins per numeric column.

    Returns:
        A JSON-able profile (see the module docstring).
    """
    columns: dict[str, dict] = {}
    for name in numeric:
        if name in frame:
            columns[name] = numeric_column_spec(frame[name], bins)
    for name in categorical:
        if name in frame:
            columns[name] = categorical_column_spec(frame[name])
    return {
        "version": PROFILE_VERSION,
        "ages": [int(a) for a in sorted(ages)],
        "rows": int(len(frame)),
        "partners": _partners(frame),
        "segments": list(SEGMENTS),
        "columns": columns,
        "groups": profile_groups(frame, columns, ages),
    }


def current_profile(frame: pd.DataFrame, reference: dict) -> dict:
    """Profile a current batch on the reference's bins, categories and age bands.

    A reference column absent from ``frame`` (raw tables without the optional table its
    features come from) is profiled as all-missing, as scoring reads it, so its missing-rate
    check names it instead of leaving it out.
    """
    absent = {name: np.nan for name in reference["columns"] if name not in frame.columns}
    if absent:
        frame = frame.assign(**absent)
    return {
        "version": PROFILE_VERSION,
        "ages": reference["ages"],
        "rows": int(len(frame)),
        "partners": _partners(frame),
        "segments": reference["segments"],
        "columns": reference["columns"],
        "groups": profile_groups(frame, reference["columns"], reference["ages"]),
    }
