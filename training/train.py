"""The training job: tune, fit both heads and the baselines, evaluate, track and register."""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.core import (
    PartnerscoreError,
    check_listed,
    file_fingerprint,
    visible,
)
from partnerscore.features.registry import (
    PHASE_PREFIX,
    feature_specs,
    get_spec,
    registry_version,
)
from partnerscore.models.baselines import (
    BASELINES,
    LayeredScorecard,
    LinearBaseline,
    NaiveExtrapolation,
)
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.config import PolicyConfig
from partnerscore.models.heads import MAX_SEGMENT_VALUES, EngagementClassifier, RevenueRegressor
from partnerscore.models.intervals import (
    RevenueIntervals,
    conditional_coverage,
    coverage,
    segment_coverage,
)
from partnerscore.models.model_uri import INCOMPLETE_TAG
from partnerscore.models.phasing import RevenuePhasing, phase_bounds
from partnerscore.models.pyfunc import log_partner_model
from partnerscore.models.stores import store_failure
from partnerscore.training import progress, tracking
from partnerscore.training.backtest import phase_backtest
from partnerscore.training.config import TrainConfig
from partnerscore.training.metrics import (
    ORACLE_MIN_PARTNERS,
    ORACLE_Z,
    bootstrap_se,
    engagement_auc_metric,
    evaluate,
    oracle_ratios,
    paired_bootstrap,
    revenue_bias_metric,
    revenue_gini_metric,
    revenue_mae_metric,
    revenue_rmse_metric,
    segment_bias_summary,
    segment_metrics,
)
from partnerscore.training.names import (
    CHALLENGER,
    HOLDOUT_ARTIFACT,
    HOLDOUT_PREDICTIONS_ARTIFACT,
    drifting,
)
from partnerscore.training.quiet import mlflow_prints_nothing
from partnerscore.training.recalibration import TABLE_COLUMNS as SEGMENT_FACTOR_COLUMNS
from partnerscore.training.recalibration import (
    BalanceFactors,
    SegmentFactors,
    cohort_trend,
    fit_balance_factors,
    fit_segment_factors,
)
from partnerscore.training.reference import (
    MANIFEST_ARTIFACT,
    REFERENCE_ARTIFACT,
    reference_profile,
)
from partnerscore.training.row_keys import TRAINING_ROWS_ARTIFACT, write_training_rows
from partnerscore.training.splits import (
    holdout_split,
    newest_partners_mask,
    partner_folds,
    time_folds,
)
from partnerscore.training.tune import tune_head

_REQUIRED = ("partner_id", "as_of", "signed_at", "label_revenue", "label_engaged", "age_days")
MIN_ROWS = 50
MIN_PARTNERS = 20
"""The smallest training set ``train`` accepts (rows, distinct partners)."""


@dataclass
class TrainResult:
    """Outcome of ``run_train``."""

    run_id: str
    version: str | None
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    params: dict[str, dict]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tracking_uri: str = ""
    comparison: dict[str, float] = field(default_factory=dict)
    model_uri: str = ""
    trial_runs: int = 0
    min_segment_partners: int = 200
    portfolio_variance: str = "bins"
    identical_to: list[str] = field(default_factory=list)
    """Earlier training runs of the same training set and config hash ("<run id> (vN)")."""
    unsettled_segments: dict[str, dict] = field(default_factory=dict)
    """Models ("evaluated", "registered") whose segment recalibration did not settle and was
    dropped: {"sweeps": n, "change": largest log-factor move of the last sweep}."""

    def summary(self) -> str:
        """Holdout comparison of the GBM heads with the baselines and where it is logged."""
        keys = [
            ("revenue_normalized_gini", "rev gini"),
            ("revenue_spearman", "rev spearman"),
            ("revenue_top_decile_capture", "top10% cap"),
            ("revenue_portfolio_bias", "rev bias"),
            ("engagement_roc_auc", "eng AUC"),
            ("engagement_brier", "eng brier"),
            ("engagement_ece", "eng ECE"),
        ]
        head = f"{'model':<12}" + "".join(f"{label:>13}" for _, label in keys)
        lines = [
            f"trained on {self.rows.get('train', 0):,} snapshots, holdout "
            f"{self.rows.get('holdout', 0):,} (newest signing cohorts) in {self.seconds:.1f} s",
            head,
        ]
        rows = {"gbm": self.metrics, **self.baselines}
        for name, m in rows.items():
            lines.append(
                f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>13.3f}" for k, _ in keys)
            )
        oracle = oracle_line(self.metrics)
        if oracle:
            lines.append(oracle)
        c = self.comparison
        if "compare_engagement_auc_diff" in c and "compare_revenue_gini_diff" in c:
            lines.append(
                "gbm minus best baseline (paired bootstrap s.e.): revenue gini "
                f"{c['compare_revenue_gini_diff']:+.4f} ({c['compare_revenue_gini_diff_se']:.4f}), "
                f"engagement AUC {c['compare_engagement_auc_diff']:+.4f} "
                f"({c['compare_engagement_auc_diff_se']:.4f})"
            )
        m = self.metrics
        if "revenue_interval_coverage" in m:
            lines.append(
                f"revenue bias {m['revenue_portfolio_bias']:+.1%} (s.e. "
                f"{m.get('revenue_portfolio_bias_se', float('nan')):.1%}), interval coverage "
                f"{m['revenue_interval_coverage']:.1%}; metrics of the pre-refit model"
            )
        if "revenue_portfolio_interval_coverage" in m:
            variance = self.portfolio_variance
            lines.append(
                "portfolio intervals (tier/region cells of each age): "
                f"{m['revenue_portfolio_interval_coverage']:.1%} covered, variance model "
                f"'{variance}'"
                + (
                    f", cohort level error {m.get('revenue_portfolio_level_cv', 0.0):.3f}"
                    if variance == "ratio_level"
                    else " (conservative; train.portfolio_variance: ratio_level is half as wide)"
                )
            )
        trend, trend_se = (
            m.get("fit_revenue_oof_cohort_trend", float("nan")),
            m.get("fit_revenue_oof_cohort_trend_se", float("nan")),
        )
        if drifting(trend, trend_se):
            lines.append(
                f"cohort drift? out of fold, newer signing cohorts earn {trend:+.0%} per year "
                f"(log scale, s.e. {trend_se:.0%}) relative to the model: "
                + (
                    "the recalibration used the time folds, which extrapolate it"
                    if m.get("fit_revenue_recalibration_time_folds") == 1
                    else "if cohorts drift, train.recalibration_cv: time (or auto) extrapolates "
                    "it (README, Models)"
                )
            )
        if m.get("revenue_segments_checked"):
            lines.append(
                f"tier/region segments with >= {self.min_segment_partners} partners: "
                f"{m['revenue_segments_checked']:.0f}, largest |revenue bias| "
                f"{m['revenue_segment_bias_max_abs']:.1%}"
                + (
                    f" (vs the simulated truth {m['revenue_segment_bias_vs_truth_max_abs']:.1%})"
                    if "revenue_segment_bias_vs_truth_max_abs" in m
                    else ""
                )
                + ", "
                f"{m['revenue_segments_beyond_bias_limit']:.0f} beyond the limit by more than "
                "their noise (evaluation/segment_metrics.csv)"
            )
        if "revenue_phase_share_error_max_abs" in m:
            lines.append(
                "revenue phasing (when the horizon's revenue arrives): largest gap between a "
                "phase's expected and realised share of its age's revenue "
                f"{m['revenue_phase_share_error_max_abs']:.1%} ("
                + (
                    f"s.e. {m['revenue_phase_share_error_se']:.1%}, largest gap beyond 2 s.e. "
                    f"{m.get('revenue_phase_share_error_beyond_2se', float('nan')):.1%}; "
                    if np.isfinite(m.get("revenue_phase_share_error_se", float("nan")))
                    else ""
                )
                + f"ages with >= {self.min_segment_partners} partners), tier/region phase "
                "cells covered "
                f"{m.get('revenue_phase_interval_coverage', float('nan')):.1%} "
                "(evaluation/revenue_phases.csv)"
            )
        for name, fit in self.unsettled_segments.items():
            lines.append(
                f"segment recalibration of the {name} model did not settle in {fit['sweeps']} "
                f"sweeps (a factor still moved by {fit['change']:.1e} on the log scale): its "
                "per-segment factors were dropped, the overall factor alone applied "
                "(training/fit.json); fewer or other train.segment_recalibration_columns"
            )
        if self.identical_to:
            lines.append(
                "same training set and configuration as earlier run "
                f"{', '.join(self.identical_to)}: training is reproducible (same seed), so this"
                " is the same model"
            )
        lines.append(f"MLflow run {self.run_id} at {self.tracking_uri}")
        if self.version:
            lines.append(f"registered version {self.version} with alias '{CHALLENGER}'")
        else:
            lines.append(f"not registered (--no-register); the model is at {self.model_uri}")
        return "\n".join(lines)


def _where(frame: pd.DataFrame, path: Path, col: str, row: int) -> str:
    """``<path>: column '<col>' row <n> (partner <id>, as_of <date>)``, ``row`` 0-based."""
    as_of = pd.Timestamp(frame["as_of"].iloc[row])  # NaT in a hand-edited training set
    as_of = "missing" if pd.isna(as_of) else as_of.strftime("%Y-%m-%d")
    partner = visible(str(frame["partner_id"].iloc[row]))
    return f"{path}: column '{col}' row {row + 1} (partner {partner}, as_of {as_of})"


def check_labels(frame: pd.DataFrame, path: Path) -> None:
    """Stop with one line at the first label no head can fit.

    Revenue below 0, or an engagement label other than 0/1 (a hand-edited training set;
    ``build`` writes neither).

    The heads refused them only once the tuning had begun: "error: unexpected ValueError:
    revenue labels must be finite and non-negative".

    Raises:
        PartnerscoreError: Naming the column, the row (1-based), the partner and as_of.
    """
    revenue = pd.to_numeric(frame["label_revenue"], errors="coerce").to_numpy(float)
    engaged = pd.to_numeric(frame["label_engaged"], errors="coerce").to_numpy(float)
    for col, bad, why in (
        ("label_revenue", ~(revenue >= 0), "revenue is an amount from 0"),
        ("label_engaged", ~np.isin(engaged, (0.0, 1.0)), "engagement is 0 or 1"),
    ):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = frame[col].iloc[row]
            raise PartnerscoreError(
                f"{_where(frame, path, col, row)}: {visible(str(value))} ({int(bad.sum())} such "
                f"rows in the column): {why}; rebuild the training set"
            )


def check_finite(frame: pd.DataFrame, path: Path) -> None:
    """Stop with one line at the first infinite feature or label, or a missing label.

    Amounts up to the largest float are valid raw data, and each affects only its partner's
    rows; but two of them add up to ``inf`` in that partner's sums (won amount, pipeline,
    ``label_revenue``), and neither the heads nor the baselines can fit an infinite number.
    An empty feature is a missing value; an empty label is not.

    Raises:
        PartnerscoreError: Naming the column, the row (1-based, as in the file) and the
            partner and as_of, so that the partner's raw rows can be fixed.
    """
    first: tuple[int, str, float, int] | None = None  # row, column, value, rows of the column
    for col in frame.columns:
        values = frame[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            continue
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        bad = ~np.isfinite(numbers) if col.startswith("label_") else np.isinf(numbers)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            if first is None or row < first[0]:
                first = (row, col, float(numbers[row]), int(bad.sum()))
    if first is None:
        return
    row, col, value, count = first
    where = _where(frame, path, col, row)
    if np.isnan(value):
        raise PartnerscoreError(f"{where}: the label is missing (rebuild the training set)")
    raise PartnerscoreError(
        f"{where}: {value} ({count} such rows in the column): this partner's values add up "
        "past the largest number a float holds (~1.8e308); fix its rows in the raw tables and "
        "build again"
    )


def load_training_set(features_dir: str | Path) -> tuple[pd.DataFrame, dict, pd.DataFrame | None]:
    """Read training_set.parquet, manifest.json and (if present) truth.parquet.

    Raises:
        PartnerscoreError: Missing files or columns, or no usable rows.
    """
    features_dir = Path(features_dir)
    path = features_dir / "training_set.parquet"
    if not path.exists():
        raise PartnerscoreError(f"{path}: not found (run `partnerscore build` first)")
    frame = pd.read_parquet(path)
    for col in _REQUIRED:
        if col not in frame.columns:
            raise PartnerscoreError(f"{path}: missing column '{col}'")
    check_finite(frame, path)
    check_labels(frame, path)
    manifest_path = features_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if "files" in manifest:  # a build's files and their SHA-256 (builds since 2026-12-06)
        # a build killed between its renames left one build's training set (or truth) beside
        # another build's manifest, whose features, data end and inputs train logged as this
        # model's lineage; a training set edited by hand since its build is still read
        manifest = check_listed(manifest_path, "run `partnerscore build` again", strict=False)
    manifest["training_set_sha256"] = file_fingerprint(path)
    truth_path = features_dir / "truth.parquet"
    truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    partners = frame["partner_id"].nunique()
    if len(frame) < MIN_ROWS or partners < MIN_PARTNERS:
        raise PartnerscoreError(
            f"{path}: only {len(frame)} rows of {partners} partners; need at least {MIN_ROWS} "
            f"rows of {MIN_PARTNERS} partners to train"
        )
    return frame, manifest, truth


def _specs_for(frame: pd.DataFrame, manifest: dict) -> list:
    names = manifest.get("feature_names")
    if names:
        specs = [get_spec(n) for n in names]
        if any(s is None for s in specs):
            unknown = [n for n, s in zip(names, specs, strict=True) if s is None][0]
            raise PartnerscoreError(
                f"manifest.json: feature '{unknown}' is not in this version's registry "
                "(rebuild the training set)"
            )
        return specs
    return [s for s in feature_specs() if s.name in frame.columns]


def _head_kwargs(params, seed: int) -> dict:
    values = params.model_dump() if hasattr(params, "model_dump") else dict(params)
    values["random_state"] = seed
    return values


def monotone_constraints(specs: list) -> tuple[int, ...]:
    """Per-feature monotone constraint from the declared direction (categoricals free)."""
    sign = {"higher_is_better": 1, "lower_is_better": -1}
    return tuple(sign.get(s.direction, 0) if s.kind == "numeric" else 0 for s in specs)


def _loggable(params: dict) -> dict:
    """Head parameters as MLflow params (the per-feature constraint vector summarised)."""
    out = {k: v for k, v in params.items() if k != "monotone_constraints"}
    mono = params.get("monotone_constraints")
    out["monotone_features"] = sum(1 for m in mono if m) if mono else 0
    return out


def out_of_fold_revenue(
    X: pd.DataFrame, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], params: dict
) -> np.ndarray:
    """Revenue predictions of each fold's validation rows by a model fitted on its train rows.

    Rows in no validation block (the oldest block of expanding folds) are NaN, and so are
    the rows of a fold whose training rows realised no revenue: a tweedie booster cannot be
    fitted to all-zero labels (LightGBM stops: "sum of labels is zero"), and a program where
    a few partners hold all the revenue leaves such a fold.
    """
    oof = np.full(len(X), np.nan)
    for tr, va in folds:
        if tr.any() and va.any() and y[tr].sum() > 0:
            oof[va] = RevenueRegressor(**params).fit(X[tr], y[tr]).predict(X[va])
    return oof


def recalibration_folds(
    frame: pd.DataFrame,
    config: TrainConfig,
    min_train_share: float = 0.5,
    kind: str | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds whose out-of-fold revenue predictions recalibrate the head and fit its intervals.

    ``config.recalibration_cv``: ``partner`` gives ``config.recalibration_partner_folds``
    random partner folds (seeded by ``config.seed``; every row out of fold once). ``time``
    gives the expanding time folds whose training part holds >= ``min_train_share`` of the
    partners: out-of-fold predictions of a model fitted on a small, old slice under-predict
    more than the final model will (the first of four blocks 10-20 points more biased), so
    only the newest folds (at least the last) are used. ``auto`` starts from the partner folds
    (:func:`fit_partner_model` moves to the time folds when they show cohort drift). ``kind``
    overrides ``config.recalibration_cv``.
    """
    if (kind or config.recalibration_cv) in ("partner", "auto"):
        return partner_folds(frame, config.recalibration_partner_folds, config.seed)
    folds = time_folds(frame, config.folds)
    total = frame["partner_id"].nunique()
    kept = [
        (tr, va)
        for tr, va in folds
        if frame.loc[tr, "partner_id"].nunique() >= min_train_share * total
    ]
    return kept or folds[-1:]


MAX_BANDS = 12


def numeric_segment_columns(specs: list, columns: tuple[str, ...]) -> tuple[str, ...]:
    """The segment columns that are numeric features (factors per band of values)."""
    kinds = {s.name: s.kind for s in specs}
    return tuple(c for c in columns if kinds.get(c) == "numeric")


def check_segment_columns(rows: pd.DataFrame, specs: list, config: TrainConfig) -> None:
    """Refuse segment recalibration or balance columns the fit could not use.

    Called before anything is fitted (the training job checks before tuning), and again by
    the fits themselves on the rows they use.

    Raises:
        PartnerscoreError: A ``segment_recalibration_columns`` entry that is not a feature of
            the model, or a numeric one with more than ``MAX_BANDS`` distinct values in
            ``rows``; the same for ``engagement_segment_columns`` (at most
            ``MAX_SEGMENT_VALUES``); a ``segment_balance_columns`` entry that is not a
            categorical feature.
    """
    kinds = {s.name: s.kind for s in specs}
    recalibration = config.segment_recalibration_columns if config.segment_recalibration else ()
    for key, columns, most in (
        ("segment_recalibration_columns", recalibration, MAX_BANDS),
        ("engagement_segment_columns", config.engagement_segment_columns, MAX_SEGMENT_VALUES),
    ):
        for col in columns:
            if col not in kinds or col not in rows.columns:
                raise PartnerscoreError(f"train.{key}: '{col}' is not a feature of the model")
            if kinds[col] == "numeric" and rows[col].nunique() > most:
                raise PartnerscoreError(
                    f"train.{key}: numeric '{col}' has {rows[col].nunique()} distinct values "
                    f"in the training rows; at most {most} (discrete values such as the "
                    "trained onboarding ages)"
                )
    for col in config.segment_balance_columns:
        if kinds.get(col) != "categorical" or col not in rows.columns:
            raise PartnerscoreError(
                f"train.segment_balance_columns: '{col}' is not a categorical feature of the model"
            )


def segment_recalibration(
    rows: pd.DataFrame, y: np.ndarray, oof: np.ndarray, specs: list, config: TrainConfig
) -> SegmentFactors:
    """Overall and per-segment revenue factors from out-of-fold rows (shrunk toward 1).

    Raises:
        PartnerscoreError: A segment column that is not a model feature, or a numeric one
            with more than ``MAX_BANDS`` distinct values.
    """
    check_segment_columns(rows, specs, config)
    columns = tuple(config.segment_recalibration_columns)
    rows = rows.reset_index(drop=True)
    return fit_segment_factors(
        rows[list(columns)],
        rows["partner_id"].to_numpy(),
        y,
        oof,
        columns,
        min_partners=config.segment_recalibration_min_partners,
        prior_sd=config.segment_recalibration_prior_sd,
    )


def segment_balance(
    revenue: RevenueRegressor,
    X: pd.DataFrame,
    train: pd.DataFrame,
    y: np.ndarray,
    specs: list,
    config: TrainConfig,
) -> BalanceFactors | None:
    """In-sample balance factors per ``config.segment_balance_columns`` value, applied.

    Fitted on the recalibrated head's in-sample predictions (:func:`fit_balance_factors`) and
    multiplied into its segment factors, so each shows as part of its feature's contribution;
    their common level multiplies the head's overall factor (:meth:`RevenueRegressor.recalibrate`).
    The columns were checked by :func:`check_segment_columns` before the head was fitted.
    None when there are no columns or no revenue.
    """
    columns = tuple(config.segment_balance_columns)
    if not columns:
        return None
    if y.sum() <= 0:
        return None
    balance = fit_balance_factors(
        train[list(columns)].reset_index(drop=True),
        train["partner_id"].to_numpy(),
        y,
        revenue.predict(X),
        columns,
        min_partners=config.segment_recalibration_min_partners,
    )
    merged = {col: dict(table) for col, table in revenue.segment_factors_.items()}
    for col, table in balance.factors.items():
        own = merged.setdefault(col, {})
        for value, f in table.items():
            own[value] = own.get(value, 1.0) * f
    revenue.recalibrate_segments(merged, revenue.segment_numeric_)
    revenue.recalibrate(revenue.calibration_factor_ * balance.level)
    return balance


def portfolio_coverage(
    data: pd.DataFrame, coverage_level: float, level_cv: float = 0.0
) -> pd.DataFrame:
    """Tier and region portfolio intervals on the holdout, one onboarding age at a time.

    A segment's interval sums its partners (:func:`portfolio_interval`, with the model's shared
    level error ``level_cv``); a partner's
    snapshots at several ages overlap in time and are not independent, so each age's rows (one
    per partner, as in a score batch) are summed separately; ``age_days`` says which.
    ``data`` has ``label_revenue``, ``_mu`` and ``_sd``.
    """
    return _segment_cells(
        data, "label_revenue", ["age_days"], ("tier", "region"), coverage_level, level_cv
    )


def _segment_cells(
    data: pd.DataFrame,
    y: str,
    keys: list[str],
    segments: tuple[str, ...],
    coverage_level: float,
    level_cv: float,
    sums: tuple[str, ...] = (),
) -> pd.DataFrame:
    """:func:`segment_coverage` of ``y`` per ``keys`` and each column of ``segments`` in turn.

    ``data`` has ``_mu`` and ``_sd``; ``keys`` hold ``age_days``. Rows ordered by ``keys``,
    then segment column, then value; columns ``segment``, ``value``, the cells', then ``keys``
    (``age_days`` as float, NaN when ``data`` has no age). Rows without an age are left out,
    as ``groupby`` leaves them; no rows: an empty frame without columns.
    """
    data = data[data["age_days"].notna()] if "age_days" in data else data.assign(age_days=np.nan)
    parts = [
        segment_coverage(
            data, y, "_mu", "_sd", seg, coverage_level, level_cv, keys=tuple(keys), sums=sums
        ).assign(_rank=rank)
        for rank, seg in enumerate(s for s in segments if s in data)
    ]
    if not parts or all(part.empty for part in parts):
        return pd.DataFrame()
    cells = pd.concat(parts, ignore_index=True)
    cells = cells.sort_values([*keys, "_rank"], kind="stable").drop(columns="_rank")
    cells["age_days"] = cells["age_days"].astype(float)
    return cells.reset_index(drop=True)


def phase_coverage(
    holdout: pd.DataFrame,
    pred: np.ndarray,
    sd: np.ndarray,
    phasing: RevenuePhasing,
    coverage_level: float,
    level_cv: float = 0.0,
) -> pd.DataFrame:
    """Holdout revenue per phase of the horizon, one onboarding age at a time.

    Per (age, phase): the whole age (segment ``all``) and each tier and region value, with the
    expected revenue ``pred * share`` (the phasing's share at the row's age), the realised
    ``label_revenue_phase_<k>``, the portfolio interval from ``sd * sqrt(share)`` (the bound
    the forecast uses, :mod:`~partnerscore.models.phasing`), and the phase's expected and
    realised share of the horizon's revenue (``expected_share``, ``realised_share``); the whole
    age's rows also carry the gap's partner-bootstrap standard error (``share_gap_se``,
    :func:`~partnerscore.training.backtest.phase_backtest`: a few hundred partners' phases are
    noisy), NaN on the tier and region rows.
    """
    ages = holdout["age_days"].to_numpy(float) if "age_days" in holdout else None
    shares = phasing.shares(ages, len(holdout))
    pred, sd = np.asarray(pred, dtype=float), np.asarray(sd, dtype=float)
    by_age = "age_days" if "age_days" in holdout else None
    # every phase's rows stacked (phase-major), so that each segment column's cells of every
    # phase and age get their intervals from one search (one per cell before 2026-12-07)
    n, phases = len(holdout), phasing.n_phases
    rows = np.tile(np.arange(n), phases)
    stacked = {
        col: holdout[col].iloc[rows].reset_index(drop=True)
        for col in ("tier", "region", "age_days")
        if col in holdout
    }
    stacked = pd.DataFrame(
        {
            **stacked,
            "all": "all",
            "phase": np.repeat(np.arange(1, phases + 1), n),
            "_y": np.concatenate(
                [holdout[f"{PHASE_PREFIX}{k + 1}"].to_numpy(float) for k in range(phases)]
            ),
            "_mu": (pred[:, None] * shares).T.ravel(),
            "_sd": (sd[:, None] * np.sqrt(shares)).T.ravel(),
            "_pred": pred[rows],
            "label_revenue": holdout["label_revenue"].to_numpy(float)[rows],
        },
        index=pd.RangeIndex(n * phases),
    )
    report = _segment_cells(
        stacked,
        "_y",
        ["age_days", "phase"],
        ("all", "tier", "region"),
        coverage_level,
        level_cv,
        sums=("_pred", "label_revenue"),
    )
    if report.empty:
        return pd.DataFrame()
    with np.errstate(invalid="ignore", divide="ignore"):
        report.insert(
            report.columns.get_loc("covered") + 1,
            "expected_share",
            report["expected"] / report.pop("_pred"),
        )
        report.insert(
            report.columns.get_loc("expected_share") + 1,
            "realised_share",
            report["actual"] / report.pop("label_revenue"),
        )
    report = report.sort_values(["phase", "age_days"], kind="stable").reset_index(drop=True)
    report["share_gap_se"] = np.nan
    bounds = phase_bounds(int(phasing.horizon_days), int(phasing.phase_days))
    if len(bounds) != phasing.n_phases:
        return report
    rows = holdout.assign(pred_revenue=pred)
    groups = rows.groupby(by_age, sort=True).indices if by_age else {np.nan: np.arange(len(rows))}
    for age, at in groups.items():
        table = phase_backtest(rows.iloc[at], shares[at], bounds)
        if table.empty:
            continue
        for rec in table.itertuples():
            same = (report["segment"] == "all") & (report["phase"] == rec.phase)
            if by_age:
                same &= report["age_days"] == float(age)
            report.loc[same, "share_gap_se"] = rec.share_gap_se
    return report


def phase_metrics(report: pd.DataFrame, min_partners: int) -> dict[str, float]:
    """The phase report's summary: shape error, bias and interval coverage.

    Over the whole ages with at least ``min_partners`` holdout rows (one per partner):
    ``revenue_phase_share_error_max_abs``, the largest gap between a phase's expected and
    realised share of its age's revenue, and ``revenue_phase_bias_max_abs``, the largest
    ``|expected / realised - 1|`` of a phase (level and shape together; a phase of a few
    thousand partners is noisy: heavy-tailed deals). ``revenue_phase_interval_coverage``: the
    share of tier and region phase cells (any size, as the horizon's portfolio coverage)
    whose realised revenue is inside the interval.
    """
    if report.empty:
        return {}
    whole = report[(report["segment"] == "all") & (report["rows"] >= min_partners)]
    cells = report[report["segment"] != "all"]
    out = {}
    if not whole.empty:
        with np.errstate(invalid="ignore", divide="ignore"):
            bias = (whole["expected"] / whole["actual"] - 1).to_numpy()
            gap = (whole["expected_share"] - whole["realised_share"]).to_numpy()
        out["revenue_phase_partners_min"] = float(whole["rows"].min())
        if np.isfinite(gap).any():
            at = int(np.nanargmax(np.abs(gap)))
            out["revenue_phase_share_error_max_abs"] = float(abs(gap[at]))
            if "share_gap_se" in whole:
                se = whole["share_gap_se"].to_numpy(dtype=float)
                out["revenue_phase_share_error_se"] = float(se[at])
                beyond = np.abs(gap) - 2 * se
                if np.isfinite(beyond).any():
                    out["revenue_phase_share_error_beyond_2se"] = max(float(np.nanmax(beyond)), 0.0)
        if np.isfinite(bias).any():
            out["revenue_phase_bias_max_abs"] = float(np.max(np.abs(bias[np.isfinite(bias)])))
    if not cells.empty:
        out["revenue_phase_interval_coverage"] = float(cells["covered"].mean())
    return out


def segment_factor_metrics(fit: dict) -> dict[str, float]:
    """Metrics per fitted value of the segment tables, with MLflow-safe names.

    ``fit_revenue_{segment,balance}_factor_<column>_<value>``, the engagement head's
    ``fit_engagement_segment_offset_<column>_<value>`` and ``fit_revenue_balance_level``.
    """
    tables = {
        "revenue_segment_factor": (fit.get("revenue_segment_factors") or {}).get("factors", {}),
        "revenue_balance_factor": fit.get("revenue_balance_factors") or {},
        "engagement_segment_offset": fit.get("engagement_segment_offsets") or {},
    }
    out = {
        f"fit_{kind}_{col}_{re.sub(r'[^A-Za-z0-9_.-]', '_', value)}": float(f)
        for kind, factors in tables.items()
        for col, table in factors.items()
        for value, f in table.items()
    }
    if fit.get("revenue_balance_level") is not None:
        out["fit_revenue_balance_level"] = float(fit["revenue_balance_level"])
    return out


def fit_engagement_head(
    train: pd.DataFrame, X: pd.DataFrame, config: TrainConfig, engagement_params: dict
) -> EngagementClassifier:
    """The engagement head as :func:`fit_partner_model` fits it.

    Booster on the older cohorts with one logit offset per value of each
    ``config.engagement_segment_columns`` feature (fitted on the booster's rows), calibration
    map on the newest ``config.calibration_share`` of partners (chosen by cross-validated log
    loss with ``auto``), then booster and offsets refitted on all rows
    (``config.engagement_refit``). ``X`` is ``train`` prepared by the model;
    ``engagement_params`` are complete (monotone constraints included).
    """
    calib = newest_partners_mask(train, config.calibration_share)
    y_eng = train["label_engaged"].to_numpy()
    return EngagementClassifier(
        calibration=config.calibration,
        calibration_candidates=tuple(config.calibration_candidates),
        refit=config.engagement_refit,
        segment_columns=tuple(config.engagement_segment_columns),
        **engagement_params,
    ).fit(X[~calib], y_eng[~calib], X[calib], y_eng[calib])


def fit_partner_model(
    train: pd.DataFrame,
    specs: list,
    config: TrainConfig,
    policy: PolicyConfig,
    revenue_params: dict,
    engagement_params: dict,
    phases: tuple[int, int] | None = None,
) -> PartnerModel:
    """Fit both heads on a training frame, with revenue recalibration and intervals.

    - Revenue: the booster is fitted on all rows; out-of-fold predictions
      (:func:`recalibration_folds`: random partner folds by default, or the newest expanding
      time folds with ``config.recalibration_cv: time``) give the recalibration
      factor ``sum(label) / sum(prediction)`` (``config.revenue_recalibration``) and the
      conformal intervals (:class:`~partnerscore.models.intervals.RevenueIntervals`). With
      ``config.segment_recalibration`` the same rows also give one shrunk factor per value of
      each segment column (:func:`segment_recalibration`), applied on the log scale inside
      that feature's contribution. Then each ``config.segment_balance_columns`` value gets an
      in-sample balance factor (:func:`segment_balance`), multiplied into the same tables; the
      intervals are fitted on the recalibrated and balanced predictions.
    - Engagement: :func:`fit_engagement_head` (booster on the older cohorts with logit offsets
      per ``engagement_segment_columns`` value, calibration map on the newest
      ``calibration_share`` of partners, then refitted on all rows).

    - Phasing: with ``phases`` (``(phase_days, horizon_days)`` of the training set's
      ``label_revenue_phase_<k>`` columns, :func:`phase_layout`), the share of the horizon's
      revenue in each phase per onboarding age (:class:`~partnerscore.models.phasing.
      RevenuePhasing`, from the labels alone).

    Monotone constraints from the feature directions are added when ``config.monotone`` and
    the parameters do not set them already. ``model.metadata["fit"]`` records the factor(s),
    the out-of-fold bias before and after them, the calibration losses and the engagement
    head's segment offsets.
    """
    check_segment_columns(train, specs, config)
    if config.monotone:
        mono = monotone_constraints(specs)
        revenue_params = {"monotone_constraints": mono, **revenue_params}
        engagement_params = {"monotone_constraints": mono, **engagement_params}
    categories = PartnerModel.categories_from(train, specs)
    empty = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=categories,
        policy=policy,
    )
    X = empty.prepare(train)
    y_rev = train["label_revenue"].to_numpy(dtype=float)
    revenue = RevenueRegressor(**revenue_params).fit(X, y_rev)
    oof = out_of_fold_revenue(X, y_rev, recalibration_folds(train, config), revenue_params)
    seen = np.isfinite(oof)
    trend, trend_se = (
        cohort_trend(
            train.loc[seen, "signed_at"], train.loc[seen, "partner_id"], y_rev[seen], oof[seen]
        )
        if "signed_at" in train
        else (float("nan"), float("nan"))
    )
    time_folds_used = config.recalibration_cv == "time"
    if config.recalibration_cv == "auto" and drifting(trend, trend_se):
        # cohort drift out of fold: only the time folds extrapolate it to the newest cohorts
        folds = recalibration_folds(train, config, kind="time")
        oof = out_of_fold_revenue(X, y_rev, folds, revenue_params)
        seen = np.isfinite(oof)
        time_folds_used = True
    oof_total, label_total = float(oof[seen].sum()), float(y_rev[seen].sum())
    factor, segments, unsettled = 1.0, None, None
    multiplier = np.ones(int(seen.sum()))
    if config.revenue_recalibration and oof_total > 0 and label_total > 0:
        factor = label_total / oof_total
        multiplier = np.full(int(seen.sum()), factor)
        if config.segment_recalibration and config.segment_recalibration_columns:
            segments = segment_recalibration(train[seen], y_rev[seen], oof[seen], specs, config)
            if not segments.settled:
                # factors still running off after max_sweeps (an extreme overall factor is
                # also every unseen value's): the plain ratio instead, reported by the run
                unsettled, segments = segments, None
        if segments is not None:
            factor = segments.overall
            multiplier = segments.multiplier(train.loc[seen].reset_index(drop=True))
            revenue.recalibrate_segments(
                segments.factors,
                numeric_segment_columns(specs, tuple(config.segment_recalibration_columns)),
            )
    revenue.recalibrate(factor)
    balance = segment_balance(revenue, X, train, y_rev, specs, config)
    if balance is not None:
        multiplier = multiplier * balance.multiplier(train.loc[seen])
    intervals = None
    if seen.sum() >= 20:
        intervals = RevenueIntervals(
            coverage=config.interval_coverage,
            method=config.interval_method,
            power=revenue.tweedie_variance_power,
            variance=config.portfolio_variance,
        ).fit(
            y_rev[seen],
            oof[seen] * multiplier,
            age=train.loc[seen, "age_days"].to_numpy(float)
            if config.interval_by_age and "age_days" in train
            else None,
            groups=level_groups(train.loc[seen]),
        )
    engagement = fit_engagement_head(train, X, config, engagement_params)
    phasing = None
    phase_cols = phase_columns(train)
    if phases is not None and phase_cols:
        phasing = RevenuePhasing.fit(
            y_rev,
            train[phase_cols].to_numpy(float),
            train["age_days"].to_numpy(float) if "age_days" in train else None,
            *phases,
        )
    model = PartnerModel(
        revenue=revenue,
        engagement=engagement,
        feature_specs=specs,
        categories=categories,
        policy=policy,
        intervals=intervals,
        phasing=phasing,
    )
    model.set_reference(train)
    model.metadata["fit"] = {
        "rows": len(train),
        "revenue_recalibration_factor": factor,
        "revenue_oof_bias_before_recalibration": (
            oof_total / label_total - 1 if label_total else float("nan")
        ),
        "revenue_oof_rows": int(seen.sum()),
        "revenue_oof_cohort_trend": trend,
        "revenue_oof_cohort_trend_se": trend_se,
        "revenue_recalibration_time_folds": float(time_folds_used),
        "revenue_oof_bias_after_recalibration": (
            float((oof[seen] * multiplier).sum()) / label_total - 1 if label_total else float("nan")
        ),
        "revenue_segment_factors": segments.to_dict() if segments is not None else None,
        # 1: the segment fit did not settle and was dropped (sweeps and last change beside)
        "revenue_segment_factors_dropped": int(unsettled is not None),
        "revenue_segment_factors_unsettled": (
            {"sweeps": unsettled.sweeps, "change": unsettled.change}
            if unsettled is not None
            else None
        ),
        "revenue_balance_factors": balance.factors if balance is not None else None,
        # the balance's common level, in the head's overall factor beside the recalibration's
        "revenue_balance_level": balance.level if balance is not None else None,
        "calibration_method": engagement.calibration_method_,
        "calibration_cv_log_loss": dict(engagement.calibration_losses_),
        "engagement_segment_offsets": engagement.segment_offsets_ or None,
        "intervals": intervals.to_dict() if intervals is not None else None,
        "phasing": phasing.to_dict() if phasing is not None else None,
    }
    return model


def level_groups(rows: pd.DataFrame) -> np.ndarray | None:
    """Each row's cohort for the shared level error: signing month and onboarding age.

    None without ``signed_at`` (the level error is then 0).
    """
    if "signed_at" not in rows:
        return None
    month = pd.to_datetime(rows["signed_at"]).dt.strftime("%Y-%m").to_numpy(dtype=object)
    if "age_days" not in rows:
        return month
    age = rows["age_days"].astype(str).to_numpy(dtype=object)
    return month + "|" + age


def phase_columns(frame: pd.DataFrame) -> list[str]:
    """The frame's ``label_revenue_phase_<k>`` columns, in phase order."""
    found = [c for c in frame.columns if c.startswith(PHASE_PREFIX)]
    return sorted(found, key=lambda c: int(c.removeprefix(PHASE_PREFIX)))


def phase_layout(frame: pd.DataFrame, manifest: dict) -> tuple[int, int] | None:
    """(phase_days, horizon_days) of a training set's revenue phases; None without them.

    Raises:
        PartnerscoreError: The phase columns do not cut the manifest's horizon into its phases
            (a training set edited by hand, or a manifest from another build).
    """
    cols = phase_columns(frame)
    if not cols:
        return None
    build = manifest.get("build_config", {})
    horizon = int(build.get("horizon_days", 180))
    phase = int(build.get("phase_days", 30))
    want = [f"{PHASE_PREFIX}{k}" for k in range(1, int(np.ceil(horizon / phase)) + 1)]
    if cols != want:
        raise PartnerscoreError(
            f"training set: phase columns {cols[0]} .. {cols[-1]} ({len(cols)}) do not cut the "
            f"manifest's {horizon}-day horizon into {phase}-day phases ({len(want)}): rebuild it"
        )
    return phase, horizon


def _log_file(artifact_path: str, write) -> None:
    """Log the file ``write(path)`` writes as the run's artifact ``artifact_path``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_path).name
        write(path)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_path).parent))


def _log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    if artifact_path.endswith(".parquet"):
        _log_file(artifact_path, lambda path: frame.to_parquet(path, index=False))
    else:
        _log_file(artifact_path, lambda path: frame.to_csv(path, index=False))


def _log_plots(
    model: PartnerModel, holdout: pd.DataFrame, preds: pd.DataFrame, metrics: dict
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        X = model.prepare(holdout)
        sample = X.sample(min(len(X), 2000), random_state=0)
        paths = [
            tracking.plot_importance(
                model.revenue.feature_importance(),
                "Revenue head: importance (gain)",
                tmp / "importance_revenue.png",
            ),
            tracking.plot_importance(
                model.engagement.feature_importance(),
                "Engagement head: importance (gain)",
                tmp / "importance_engagement.png",
            ),
            tracking.plot_shap_summary(
                model.revenue.raw_contributions(sample)[:, :-1],
                sample,
                "Revenue head: SHAP (log scale)",
                tmp / "shap_summary_revenue.png",
            ),
            tracking.plot_shap_summary(
                model.engagement.raw_contributions(sample)[:, :-1],
                sample,
                "Engagement head: SHAP (logit)",
                tmp / "shap_summary_engagement.png",
            ),
            tracking.plot_calibration(
                holdout["label_engaged"],
                preds["pred_engagement"],
                tmp / "calibration.png",
                subtitle=(
                    f"{model.engagement.calibration_method_} map, "
                    f"ECE {metrics.get('engagement_ece', float('nan')):.3f}"
                ),
            ),
            tracking.plot_lift(holdout["label_revenue"], preds["pred_revenue"], tmp / "lift.png"),
        ]
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="plots")


def oracle_line(metrics: dict[str, float]) -> str:
    """The train summary's oracle line: the ratios logged, or why a head's was not.

    "" when the run had no simulated truth (no ``oracle_*`` metric at all).
    """
    if "oracle_revenue_normalized_gini" not in metrics:
        return ""
    partners = metrics.get("oracle_partners", float("nan"))
    if partners < ORACLE_MIN_PARTNERS:
        return (
            f"oracle ratio (simulated truth): not shown, the holdout holds {partners:.0f} "
            f"partners (< {ORACLE_MIN_PARTNERS}: too noisy to read)"
        )
    parts = []
    for key, label, chance in (
        ("revenue_normalized_gini", "revenue gini", 0.0),
        ("engagement_roc_auc", "engagement AUC", 0.5),
    ):
        if f"oracle_ratio_{key}" in metrics:
            parts.append(f"{label} {metrics[f'oracle_ratio_{key}']:.2f}")
        else:
            se = metrics.get(f"oracle_{key}_se", float("nan"))
            near = f"within {ORACLE_Z:g} s.e. ({se:.3f}) of" if se == se else "not above"
            parts.append(
                f"{label} not shown (the oracle's {metrics[f'oracle_{key}']:.3f} is {near} "
                f"chance, {chance:g})"
            )
    return "oracle ratio (simulated truth): " + ", ".join(parts)


@dataclass
class Evaluation:
    """Everything ``run_train`` fits and measures, before any MLflow logging.

    Attributes:
        model: The registered model (refitted on all rows when ``config.refit``).
        evaluated: The pre-refit model, fitted on the training cohorts only; every holdout
            metric is this model's.
        train, holdout: The split frames.
        preds: The evaluated model's holdout predictions (with interval columns).
        metrics: Holdout metrics (plus oracle ratios, bias s.e., interval coverage).
        baselines: Holdout metrics per baseline.
        comparison: GBM minus best baseline per key metric, with paired bootstrap s.e.
        segments: Per tier/region metrics of the evaluated model.
        portfolio: Per tier/region realised revenue vs the portfolio interval.
        params: Chosen parameters per head.
        studies: Optuna studies per head (None without tuning).
        interval_report: Holdout interval coverage overall, per prediction bin and for zero /
            positive outcomes (:func:`~partnerscore.models.intervals.conditional_coverage`).
        phases: Holdout revenue per phase of the horizon, age, tier and region
            (:func:`phase_coverage`; empty without phase labels or intervals).
    """

    model: PartnerModel
    evaluated: PartnerModel
    train: pd.DataFrame
    holdout: pd.DataFrame
    preds: pd.DataFrame
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    comparison: dict[str, float]
    segments: pd.DataFrame
    portfolio: pd.DataFrame
    params: dict[str, dict]
    studies: dict
    interval_report: pd.DataFrame = field(default_factory=pd.DataFrame)
    phases: pd.DataFrame = field(default_factory=pd.DataFrame)


def _compare(
    holdout: pd.DataFrame,
    preds: pd.DataFrame,
    baseline_preds: dict[str, tuple[np.ndarray, np.ndarray]],
    baselines: dict[str, dict[str, float]],
    rounds: int,
    seed: int,
) -> dict[str, float]:
    """GBM minus the best baseline (per metric) with paired partner-bootstrap s.e.

    ``*_margin_over_se`` is the difference in units of its s.e., signed so that > 1 means
    the GBM is better by more than one standard error.
    """
    out: dict[str, float] = {"compare_bootstrap_rounds": float(rounds)}
    # the metrics read the labels only, and each resample indexes every column it is given
    labels = holdout[[c for c in ("partner_id", "label_revenue", "label_engaged") if c in holdout]]
    checks = (
        ("revenue_gini", "revenue_normalized_gini", revenue_gini_metric, "pred_revenue", 0, 1),
        ("revenue_mae", "revenue_mae", revenue_mae_metric, "pred_revenue", 0, -1),
        ("revenue_rmse", "revenue_rmse", revenue_rmse_metric, "pred_revenue", 0, -1),
        # the predictive median is the point forecast for absolute error
        ("revenue_median_mae", "revenue_mae", revenue_mae_metric, "pred_revenue_median", 0, -1),
        ("engagement_auc", "engagement_roc_auc", engagement_auc_metric, "pred_engagement", 1, 1),
    )
    for key, metric_key, metric, col, which, sign in checks:
        if col not in preds:
            continue
        scored = {n: m[metric_key] for n, m in baselines.items() if np.isfinite(m[metric_key])}
        if not scored:
            continue
        best = (max if sign > 0 else min)(scored, key=scored.get)
        diff, se = paired_bootstrap(
            labels, metric, preds[col].to_numpy(), baseline_preds[best][which], rounds, seed
        )
        out[f"compare_{key}_best_baseline_is_{best}"] = 1.0
        out[f"compare_{key}_diff"] = diff
        out[f"compare_{key}_diff_se"] = se
        out[f"compare_{key}_margin_over_se"] = sign * diff / se if se and se > 0 else float("nan")
    return out


def tune_heads(
    train: pd.DataFrame, specs: list, config: TrainConfig, policy: PolicyConfig
) -> tuple[dict[str, dict], dict]:
    """Each head tuned on its own search over expanding time folds inside the training cohorts.

    Returns:
        (parameters per head, Optuna study per head or None), keyed "revenue" / "engagement".
    """
    base_rev = _head_kwargs(config.revenue, config.seed)
    base_rev["tweedie_variance_power"] = config.tweedie_variance_power
    base_eng = _head_kwargs(config.engagement, config.seed)
    if config.monotone:
        base_rev["monotone_constraints"] = base_eng["monotone_constraints"] = monotone_constraints(
            specs
        )
    probe = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=PartnerModel.categories_from(train, specs),
        policy=policy,
    )
    X_train = probe.prepare(train)
    folds = time_folds(train, config.folds)
    studies, params = {}, {}
    for head, base, label in (
        ("revenue", base_rev, "label_revenue"),
        ("engagement", base_eng, "label_engaged"),
    ):
        params[head], studies[head] = tune_head(
            head,
            X_train,
            train[label].to_numpy(),
            folds,
            base,
            config.trials,
            config.seed,
            config.timeout_seconds,
        )
    return params, studies


def _cohorts(rows: pd.DataFrame) -> str:
    signed = pd.to_datetime(rows["signed_at"])
    return (
        f"{len(rows)} snapshots of {rows['partner_id'].nunique()} partners signed "
        f"{signed.min():%Y-%m-%d} .. {signed.max():%Y-%m-%d}"
    )


def trainable_split(
    frame: pd.DataFrame, config: TrainConfig, source: str = "training set"
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The training set sorted, and its training and holdout cohorts, if both can be used.

    The heads need both engagement classes and some revenue in the training cohorts (a
    tweedie booster cannot fit all-zero labels), and the holdout needs them too: without
    revenue its Gini and bias are undefined, with one engagement class its AUC, so the run
    would register a version whose primary score is NaN, which no challenger can beat and
    no gate can read. The training cohorts need ``min_training_partners`` partners too: a
    ``holdout_share`` near 1 left a handful. Cheap (no fitting): ``run_train`` checks it
    before it opens the store.

    Args:
        frame: The training set (``load_training_set``).
        config: Training settings (``holdout_share``, ``min_training_partners``).
        source: What the message names (the training set's path).

    Returns:
        (frame sorted by partner and as_of, training cohorts, holdout cohorts).

    Raises:
        PartnerscoreError: One line naming the side, its rows and what it lacks (fewer
            partners than ``min_training_partners`` in the training cohorts: both sides'
            partner counts).
    """
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    train_mask, hold_mask = holdout_split(frame, config.holdout_share)
    train, holdout = (
        frame[train_mask].reset_index(drop=True),
        frame[hold_mask].reset_index(drop=True),
    )
    if holdout.empty or train.empty:
        raise PartnerscoreError(
            f"{source}: train.holdout_share {config.holdout_share} leaves "
            f"{'no holdout' if holdout.empty else 'no training'} rows"
        )
    trained, held = train["partner_id"].nunique(), holdout["partner_id"].nunique()
    if trained < config.min_training_partners:
        raise PartnerscoreError(
            f"{source}: train.holdout_share {config.holdout_share} leaves {trained} partners "
            f"in the training cohorts and {held} in the holdout cohorts; training needs at "
            f"least {config.min_training_partners} (train.min_training_partners): lower "
            "train.holdout_share or build from more partners"
        )
    hint = (
        f"hold out more cohorts (train.holdout_share, now {config.holdout_share}) or build "
        "from a longer history"
    )
    for side, rows, fix in (
        ("training cohorts", train, "build from a longer history or other --ages/--horizon"),
        ("holdout cohorts", holdout, hint),
    ):
        engaged = rows["label_engaged"].to_numpy()
        if (engaged == engaged[0]).all():
            raise PartnerscoreError(
                f"{source}: column 'label_engaged' is {engaged[0]} in every row of the {side} "
                f"({_cohorts(rows)}): the engagement head needs both classes to be fitted and "
                f"judged; {fix}"
            )
        if not rows["label_revenue"].sum() > 0:
            raise PartnerscoreError(
                f"{source}: column 'label_revenue' is 0 in every row of the {side} "
                f"({_cohorts(rows)}): no won revenue to fit or judge the revenue head on; {fix}"
            )
    return frame, train, holdout


def train_and_evaluate(
    frame: pd.DataFrame,
    manifest: dict,
    truth: pd.DataFrame | None,
    config: TrainConfig,
    policy: PolicyConfig | None = None,
    source: str = "training set",
    split: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
) -> Evaluation:
    """Split, tune, fit, evaluate on the holdout against the baselines, then refit.

    The pure part of ``partnerscore train`` (no MLflow): ``bench/bench_models.py`` uses it too.
    ``split`` is :func:`trainable_split`'s result when the caller checked it already (else it
    is made here, ``source`` naming the training set in its messages).
    """
    policy = policy or PolicyConfig()
    specs = _specs_for(frame, manifest)
    frame, train, holdout = split if split is not None else trainable_split(frame, config, source)
    check_segment_columns(train, specs, config)
    params, studies = tune_heads(train, specs, config, policy)
    phases = phase_layout(frame, manifest)
    evaluated = fit_partner_model(
        train, specs, config, policy, params["revenue"], params["engagement"], phases
    )
    preds = evaluated.predict(holdout)
    ages = holdout["age_days"].to_numpy(float) if "age_days" in holdout else None
    intervals = evaluated.revenue_intervals(preds["pred_revenue"].to_numpy(), ages)
    preds = preds.assign(**(intervals or {}))
    metrics = evaluate(holdout, preds["pred_revenue"], preds["pred_engagement"])
    rounds, seed = config.bootstrap_rounds, config.seed
    # the bootstrap metrics read the labels only: resampling ~70 feature columns too tripled
    # its time (3 s per metric on a 50k program's holdout; same numbers)
    labels = holdout[["partner_id", "label_revenue", "label_engaged"]]
    metrics["revenue_portfolio_bias_se"] = bootstrap_se(
        labels, revenue_bias_metric, preds["pred_revenue"].to_numpy(), rounds, seed
    )
    portfolio = pd.DataFrame()
    conditional = pd.DataFrame()
    phase_report = pd.DataFrame()
    if "pred_revenue_lo" in preds:
        metrics["revenue_interval_coverage"] = coverage(
            holdout["label_revenue"], preds["pred_revenue_lo"], preds["pred_revenue_hi"]
        )
        if evaluated.intervals.method == "mondrian":
            metrics["revenue_interval_attainable_coverage"] = (
                evaluated.intervals.attainable_coverage_
            )
        conditional = conditional_coverage(
            holdout["label_revenue"],
            preds["pred_revenue"],
            preds["pred_revenue_lo"],
            preds["pred_revenue_hi"],
            evaluated.intervals.bins,
            ages,
        )
        for row in conditional.itertuples():
            if row.group != "all" and np.isfinite(row.coverage):
                metrics[f"revenue_interval_coverage_{row.group}"] = float(row.coverage)
        median = preds["pred_revenue_median"].to_numpy(float)
        if np.isfinite(median).all():
            metrics["revenue_median_mae"] = float(
                np.mean(np.abs(holdout["label_revenue"].to_numpy(float) - median))
            )
        metrics["revenue_interval_mean_width"] = float(
            (preds["pred_revenue_hi"] - preds["pred_revenue_lo"]).mean()
        )
        data = holdout.assign(_mu=preds["pred_revenue"].to_numpy(), _sd=preds["pred_revenue_sd"])
        level = evaluated.intervals.level if evaluated.intervals is not None else 0.0
        portfolio = portfolio_coverage(data, config.interval_coverage, level)
        metrics["revenue_portfolio_level_cv"] = float(level)
        if not portfolio.empty:
            metrics["revenue_portfolio_interval_coverage"] = float(portfolio["covered"].mean())
        if evaluated.phasing is not None:
            phase_report = phase_coverage(
                holdout,
                preds["pred_revenue"].to_numpy(),
                preds["pred_revenue_sd"].to_numpy(),
                evaluated.phasing,
                config.interval_coverage,
                level,
            )
            metrics.update(phase_metrics(phase_report, config.segment_bias_min_partners))
    for key, value in evaluated.metadata["fit"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics[f"fit_{key}"] = float(value)
    for name, value in segment_factor_metrics(evaluated.metadata["fit"]).items():
        metrics[name] = value
    for name, loss in evaluated.metadata["fit"]["calibration_cv_log_loss"].items():
        metrics[f"calibration_cv_log_loss_{name}"] = loss
    if truth is not None:
        metrics.update(oracle_ratios(metrics, holdout, truth, rounds, seed))

    baselines: dict[str, dict[str, float]] = {}
    baseline_preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, cls in BASELINES.items():
        if cls is NaiveExtrapolation:
            est = cls(horizon_days=int(manifest.get("build_config", {}).get("horizon_days", 180)))
        elif cls in (LayeredScorecard, LinearBaseline):
            est = cls(specs)
        est.fit(train, train["label_revenue"].to_numpy(), train["label_engaged"].to_numpy())
        baseline_preds[name] = est.predict(holdout)
        baselines[name] = evaluate(holdout, *baseline_preds[name])
    comparison = _compare(labels, preds, baseline_preds, baselines, rounds, seed)
    segments = segment_metrics(
        holdout,
        preds["pred_revenue"],
        preds["pred_engagement"],
        rounds=rounds,
        seed=seed,
        truth=truth,
    )
    metrics.update(
        segment_bias_summary(
            segments,
            config.segment_bias_min_partners,
            config.max_portfolio_bias,
            config.portfolio_bias_z,
        )
    )

    model = evaluated
    if config.refit:
        model = fit_partner_model(
            frame, specs, config, policy, params["revenue"], params["engagement"], phases
        )
    return Evaluation(
        model=model,
        evaluated=evaluated,
        train=train,
        holdout=holdout,
        preds=preds,
        metrics=metrics,
        baselines=baselines,
        comparison=comparison,
        segments=segments,
        portfolio=portfolio,
        params=params,
        studies=studies,
        interval_report=conditional,
        phases=phase_report,
    )


def run_train(
    features_dir: str | Path,
    config: TrainConfig,
    *,
    policy: PolicyConfig | None = None,
    tracking_uri: str,
    artifact_root: str | None = None,
    config_hash: str = "",
    register: bool = True,
    resolved_config: dict | None = None,
) -> TrainResult:
    """The ``partnerscore train`` job.

    Splits by signing cohort (holdout = newest), tunes each head with Optuna on expanding time
    folds of the training cohorts, fits both heads and the baselines, evaluates everything on
    the holdout, then (``config.refit``) refits the chosen configuration on all rows including
    the holdout cohorts — the newest partners are the most informative ones. Every
    ``holdout_*`` metric is the pre-refit model's, on partners it never saw; the registered
    model is the refitted one (params ``refit`` and ``refit_rows`` say so). Logs to MLflow and
    registers a new version with alias ``challenger`` (unless ``register`` is False).
    Lineage (:func:`log_lineage`): the training and holdout cohorts as dataset inputs, the
    resolved configuration, one nested run per Optuna trial, descriptions on the run and the
    model version.

    Args:
        features_dir: Folder written by ``partnerscore build``.
        config: Training settings.
        policy: Scoring policy bundled with the model.
        tracking_uri: MLflow tracking (and registry) URI.
        artifact_root: Artifact root for a new experiment on a local store.
        config_hash: Hash of the application config, logged as tag and param.
        register: Register the model (alias ``challenger``); False only logs it in the run.
        resolved_config: The full application configuration in effect (logged as
            ``config/resolved.json``; default: this training config and the policy).

    Returns:
        Run id, registered version and holdout metrics.
    """
    started = time.perf_counter()
    policy = policy or PolicyConfig()
    frame, manifest, truth = load_training_set(features_dir)
    source = str(Path(features_dir) / "training_set.parquet")
    split = trainable_split(frame, config, source)  # bad input stops before the store
    # the store before the work: an unreachable server or a locked database stops the job now,
    # not after the tuning
    tracking.setup_tracking(tracking_uri, config.experiment, artifact_root)
    with progress.task("training: tuning, fitting and evaluating both heads"):
        ev = train_and_evaluate(frame, manifest, truth, config, policy, split=split)
    model, train, holdout, preds, metrics = ev.model, ev.train, ev.holdout, ev.preds, ev.metrics
    rev_params, eng_params = ev.params["revenue"], ev.params["engagement"]
    specs = model.feature_specs
    trained_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    model.metadata = {
        **model.metadata,
        "config_hash": config_hash,
        "registry_version": registry_version(),
        "trained_at": trained_at,
        "training_rows": int(model.metadata.get("fit", {}).get("rows", len(train))),
        "holdout_rows": len(holdout),
        "refit": bool(config.refit),
        "training_set_sha256": manifest.get("training_set_sha256", ""),
        "horizon_days": manifest.get("build_config", {}).get("horizon_days"),
        "trained_ages": manifest.get("build_config", {}).get("ages"),
        # every training row's outcome period ends on or before it (build's label data end)
        "training_data_end": manifest.get("data_end"),
        "holdout_metrics": metrics,
    }

    with mlflow.start_run(run_name=f"train-{trained_at}") as run:
        mlflow.set_tags(
            {
                "config_hash": config_hash,
                "registry_version": registry_version(),
                "training_set_sha256": manifest.get("training_set_sha256", ""),
                "partnerscore.job": "train",
            }
        )
        mlflow.log_params(
            {
                "config_hash": config_hash,
                "trials": config.trials,
                "holdout_share": config.holdout_share,
                "calibration_share": config.calibration_share,
                "folds": config.folds,
                "features": len(specs),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "refit": config.refit,
                "refit_rows": int(model.metadata["training_rows"]),
                "calibration": ev.evaluated.engagement.calibration_method_,
                "engagement_refit": ev.evaluated.engagement.refitted_,
                "engagement_segment_columns": ",".join(config.engagement_segment_columns),
                "revenue_recalibration": config.revenue_recalibration,
                "recalibration_cv": config.recalibration_cv,
                "recalibration_partner_folds": config.recalibration_partner_folds,
                "segment_recalibration": config.segment_recalibration,
                "segment_recalibration_columns": ",".join(config.segment_recalibration_columns),
                "segment_balance_columns": ",".join(config.segment_balance_columns),
                "interval_coverage_target": config.interval_coverage,
                "monotone": config.monotone,
                "seed": config.seed,
                "promotion_margin": config.promotion_margin,
                "max_portfolio_bias": config.max_portfolio_bias,
                **{f"revenue_{k}": v for k, v in _loggable(rev_params).items()},
                **{f"engagement_{k}": v for k, v in _loggable(eng_params).items()},
            }
        )
        finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
        mlflow.log_metrics({f"holdout_{k}": v for k, v in finite.items()})
        mlflow.log_metrics({k: v for k, v in ev.comparison.items() if np.isfinite(v)})
        if config.refit:
            refit_fit = model.metadata.get("fit", {})
            mlflow.log_metrics(
                {
                    f"refit_{k}": float(v)
                    for k, v in refit_fit.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        for name, m in ev.baselines.items():
            mlflow.log_metrics({f"baseline_{name}_{k}": v for k, v in m.items() if np.isfinite(v)})
        for head, study in ev.studies.items():
            if study is not None:
                mlflow.log_metric(f"tuning_{head}_best_loss", study.best_value)
                _log_frame(study.trials_dataframe(), f"tuning/{head}_trials.csv")
        mlflow.log_dict(manifest, MANIFEST_ARTIFACT)
        mlflow.log_dict(reference_profile(model, frame, manifest), REFERENCE_ARTIFACT)
        mlflow.log_dict(
            {"features": [s.model_dump() for s in specs]}, "training/feature_specs.json"
        )
        mlflow.log_dict(
            {"evaluated": ev.evaluated.metadata.get("fit"), "registered": model.metadata["fit"]},
            "training/fit.json",
        )
        for name, fitted in (("evaluated", ev.evaluated), ("registered", model)):
            factors = fitted.metadata.get("fit", {}).get("revenue_segment_factors")
            if factors:
                _log_frame(
                    pd.DataFrame(factors["table"], columns=list(SEGMENT_FACTOR_COLUMNS)),
                    f"training/segment_factors_{name}.csv",
                )
        if not ev.segments.empty:
            _log_frame(ev.segments, "evaluation/segment_metrics.csv")
        if not ev.portfolio.empty:
            _log_frame(ev.portfolio, "evaluation/portfolio_intervals.csv")
        if not ev.interval_report.empty:
            _log_frame(ev.interval_report, "evaluation/interval_coverage.csv")
        if not ev.phases.empty:
            _log_frame(ev.phases, "evaluation/revenue_phases.csv")
        _log_frame(holdout, HOLDOUT_ARTIFACT)
        # the training rows' keys, for the gate
        _log_file(TRAINING_ROWS_ARTIFACT, lambda path: write_training_rows(train, path))
        _log_frame(
            pd.DataFrame(
                {
                    "partner_id": holdout["partner_id"].to_numpy(),
                    "as_of": holdout["as_of"].to_numpy(),
                    "pred_revenue": preds["pred_revenue"].to_numpy(),
                    "pred_engagement": preds["pred_engagement"].to_numpy(),
                }
            ),
            HOLDOUT_PREDICTIONS_ARTIFACT,
        )
        if config.plots:
            _log_plots(ev.evaluated, holdout, preds, metrics)
        trial_runs = log_lineage(
            ev,
            Path(features_dir) / "training_set.parquet",
            manifest,
            run,
            resolved_config
            or {
                "train": config.model_dump(mode="json"),
                "policy": policy.model_dump(mode="json"),
            },
        )
        with progress.task("logging the model"):
            # registered below, all at once: a version created here stayed without its alias,
            # tags and description when the job was interrupted before they were set
            info = log_partner_model(
                model, None, input_example=holdout, registry_name=config.registered_model
            )
        run_id = run.info.run_id
    version = None
    if register:
        tags = {
            f"holdout_{key}": f"{metrics[key]:.4f}"
            for key in (
                "revenue_normalized_gini",
                "revenue_portfolio_bias",
                "engagement_roc_auc",
                "primary_score",
            )
        }
        tags |= {"config_hash": config_hash, "refit": str(config.refit)}
        version = register_version(
            info.model_uri, config.registered_model, model_description(ev, config), tags
        )
    return TrainResult(
        run_id=run_id,
        version=version,
        metrics=metrics,
        baselines=ev.baselines,
        params={"revenue": rev_params, "engagement": eng_params},
        rows={"train": len(train), "holdout": len(holdout)},
        seconds=time.perf_counter() - started,
        tracking_uri=tracking_uri,
        comparison=ev.comparison,
        model_uri=f"models:/{config.registered_model}/{version}" if version else info.model_uri,
        trial_runs=trial_runs,
        min_segment_partners=config.segment_bias_min_partners,
        portfolio_variance=config.portfolio_variance,
        identical_to=identical_runs(
            run, config_hash, manifest.get("training_set_sha256", ""), config.registered_model
        ),
        unsettled_segments={
            name: fitted.metadata["fit"]["revenue_segment_factors_unsettled"]
            for name, fitted in (
                ("evaluated", ev.evaluated),
                ("registered", model if config.refit else None),
            )
            if fitted is not None
            and fitted.metadata.get("fit", {}).get("revenue_segment_factors_unsettled")
        },
    )


def identical_runs(run, config_hash: str, sha: str, name: str) -> list[str]:
    """Earlier training runs of this experiment with the same training set and config hash.

    Training is deterministic given both (the seed is part of the config), so such a run
    fitted the same model. Each as ``"<run id, 8 characters> (v<version>)"`` (no version when
    it was not registered), oldest first, at most three; none without a hash or a sha.
    """
    if not config_hash or not sha:
        return []
    client = mlflow.MlflowClient()
    try:
        earlier = client.search_runs(
            [run.info.experiment_id],
            filter_string=(
                f"tags.config_hash = '{config_hash}' and tags.training_set_sha256 = '{sha}'"
                " and tags.`partnerscore.job` = 'train'"
            ),
            order_by=["attributes.start_time ASC"],
        )
    except mlflow.exceptions.MlflowException:
        return []
    found = []
    for other in earlier:
        if other.info.run_id == run.info.run_id:
            continue
        try:
            versions = client.search_model_versions(
                f"name = '{name}' and run_id = '{other.info.run_id}'"
            )
        except mlflow.exceptions.MlflowException:
            versions = []
        named = ", ".join(f"v{v.version}" for v in sorted(versions, key=lambda v: int(v.version)))
        found.append(other.info.run_id[:8] + (f" ({named})" if named else ""))
    return found[:3]


def register_version(model_uri: str, name: str, description: str, tags: dict[str, str]) -> str:
    """Register a logged model as a new version with its description, tags and ``challenger``.

    All or nothing: SIGINT and SIGTERM wait until the version is complete (a second or so;
    :func:`~partnerscore.training.tracking.signals_deferred`; the job then finishes: the
    version is its result), and a version whose
    description, tags or alias could not be written is deleted again (a store that went
    away meanwhile cannot delete it: the version stays without the alias, which is written
    last, tagged :data:`INCOMPLETE_TAG` from its creation, and the error line says so). An
    interrupted
    ``train`` left a READY version without any of them, which ``promote --version`` would
    still have read.

    Returns:
        The new version.
    """
    with tracking.signals_deferred(commit=True):  # the job's last step: it finishes after
        with mlflow_prints_nothing():  # its two lines: the caller says "registered version"
            registered = mlflow.register_model(model_uri, name, tags={INCOMPLETE_TAG: "true"})
        version = str(registered.version)
        client = mlflow.MlflowClient()
        try:
            client.update_model_version(name, version, description=description)
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
            client.set_registered_model_alias(name, CHALLENGER, version)
            client.delete_model_version_tag(name, version, INCOMPLETE_TAG)
        except Exception as exc:
            try:
                client.delete_model_version(name, version)
            except Exception as again:
                # a store gone mid-registration: the version stays, without the alias (the
                # alias is written last); said in the store's one line
                failure = store_failure(again, mlflow.get_tracking_uri())
                if failure is None:
                    raise
                raise type(failure)(
                    f"{failure.message}; version {version} of '{name}' was left without its "
                    f"'{CHALLENGER}' alias, tagged {INCOMPLETE_TAG} (`promote` refuses it; "
                    "delete it once the store is back)"
                ) from exc
            raise
    return version


def _window(ev: Evaluation) -> dict:
    return tracking.data_window(ev.train, ev.holdout)


def model_description(ev: Evaluation, config: TrainConfig) -> str:
    """The model version's description: data window and holdout metrics."""
    refit_rows = int(ev.model.metadata.get("fit", {}).get("rows", 0)) if config.refit else None
    return tracking.describe_training(_window(ev), ev.metrics, ev.baselines, refit_rows)


def log_lineage(ev: Evaluation, source: Path, manifest: dict, run, resolved: dict) -> int:
    """Lineage of the active training run.

    Logs the training and holdout cohorts as dataset inputs (source: the training set file),
    the resolved configuration (``config/resolved.json``), the data window as params, the
    run's description (``mlflow.note.content``) and one nested child run per Optuna trial.

    Returns:
        The number of trial runs.
    """
    sha = manifest.get("training_set_sha256", "")
    tracking.log_datasets(ev.train, ev.holdout, source, sha)
    mlflow.log_dict(resolved, "config/resolved.json")
    window = _window(ev)
    mlflow.log_params({f"data_{k}": v for k, v in window.items() if isinstance(v, str)})
    mlflow.set_tag(
        "mlflow.note.content", tracking.describe_training(window, ev.metrics, ev.baselines)
    )
    return tracking.log_trials(ev.studies, run.info.run_id, run.info.experiment_id)
