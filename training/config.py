"""Configuration for training, tuning, tracking and promotion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from partnerscore.features.core import FrozenConfig
from partnerscore.models.config import HeadParams


class TrainConfig(FrozenConfig):
    """Training and model-management settings.

    Attributes:
        seed: Seed for LightGBM and Optuna.
        trials: Optuna trials per head (0 keeps the default parameters).
        timeout_seconds: Optional wall-clock cap on tuning per head.
        holdout_share: Share of the newest signing cohorts held out for evaluation.
        min_training_partners: Fewest partners the training cohorts (what ``holdout_share``
            leaves) may hold; fewer stop ``train`` before the store is touched, naming both
            sides. ``holdout_share 0.99`` left 11 partners (about 44 rows, fewer than two leaves
            of the heads' ``min_child_samples`` 40: no split) and registered the model. At 50
            (about 200 rows) the heads can split a few times and the newest
            ``calibration_share`` still holds about 7 partners; the test programs (150
            partners and up) leave 99 or more, the demo (2,000) about 1,400.
        calibration_share: Share of the training cohorts (newest) used to calibrate engagement.
        calibration: Engagement calibration map: ``auto`` (the candidate with the lowest
            cross-validated log loss on the calibration rows among ``calibration_candidates``),
            or one of ``sigmoid`` (Platt), ``beta``, ``smooth_isotonic``, ``isotonic`` (steps).
        calibration_candidates: Maps compared by ``auto``.
        engagement_refit: Refit the engagement booster on all training cohorts after the
            calibration map is fitted on the newest slice (the map is kept).
        engagement_segment_columns: Features whose values (numeric ones: bands starting at
            each distinct training value, at most 12, such as the onboarding ages) get one
            logit offset in the engagement head, fitted on the booster's rows before the
            calibration map (:class:`~partnerscore.models.heads.EngagementClassifier`). The
            booster alone left day-30 snapshots about 1 point and platinum partners about
            2 points under the truth on the holdout, which one pooled map cannot fix (README,
            "Models"). ``()``: no offsets (the behaviour before 2026-12-06).
        monotone: Constrain both heads to be monotone in every numeric feature with a declared
            direction (``higher_is_better`` increasing, ``lower_is_better`` decreasing).
        folds: Number of expanding time-based folds (tuning; the revenue recalibration and
            intervals with ``recalibration_cv: time``).
        tweedie_variance_power: Default variance power of the revenue head (tuned if trials).
        revenue_recalibration: Multiply revenue predictions by sum(labels) / sum(predictions)
            of out-of-fold predictions (fixes out-of-sample under-prediction of a log-link
            model on a heavy-tailed target).
        recalibration_cv: Where the revenue head's out-of-fold predictions (recalibration
            factors and conformal intervals) come from. ``partner``:
            ``recalibration_partner_folds`` random folds of partners, every training row out of
            fold once. ``time``: the newest expanding time folds (each predicted by a model of
            the older cohorts holding at least half of the partners; about half of the rows).
            ``auto`` (default): ``partner``, moved to ``time`` when the out-of-fold cohort trend
            (``revenue_oof_cohort_trend``, logged) is beyond 2 s.e. Measured (README, "Remaining
            goals"): on 16 stationary programs of 20,000 partners the time folds' factor
            scattered by 9% and carried the level error vs truth to 12-14% (s.d.), the partner
            folds' by 1.6%; under a 0.2/yr cohort drift the partner folds left the newest
            cohorts at -17.7% vs truth, the time folds at -1.7% and ``auto`` at -3.1% (7 of 8
            programs switched); ``auto`` switched on 1 of 40 stationary programs (5k-50k).
        recalibration_partner_folds: Number of partner folds for ``recalibration_cv: partner``.
        segment_recalibration: On top of the overall factor, one out-of-fold factor per value
            of each ``segment_recalibration_columns`` column (e.g. per tier and per region),
            shrunk toward 1 by an empirical-Bayes weight (:mod:`training.recalibration`), for
            a tilt across segments that one constant cannot remove. With few partners the
            factors are noisy (README, "Model benchmark": measured effects per program size).
            Needs ``revenue_recalibration``.
        segment_recalibration_columns: Features with per-value factors: categorical ones
            (tier, region) per category; numeric ones with few distinct training values
            (``age_days``, the trained onboarding ages) per band starting at each value. The
            onboarding age is in by default: out of fold the model under-predicts young
            snapshots (-7% at day 30, +3% at day 180 at 50,000 partners), and the newest
            cohorts, which are scored most, are mostly young.
        segment_recalibration_prior_sd: Standard deviation of the log factors across a
            column's values (the shrinkage prior); None estimates it from the out-of-fold rows
            per column (DerSimonian-Laird).
        segment_recalibration_min_partners: Values with fewer out-of-fold partners keep 1
            (also the smallest value a balance factor is fitted for).
        segment_balance_columns: Categorical features whose values get an in-sample balance
            factor after recalibration (:func:`training.recalibration.fit_balance_factors`):
            every value's predicted total then matches its label total up to the overall
            factor. The shrunk tweedie booster leans toward the mean per tier even in sample
            (registered over-, platinum under-predicted); balancing the tier moves unseen
            partners' bias vs truth by -2.9 / +2.9 points in registered / platinum and lowers
            their deviance (README, "Remaining goals"). The partner type likewise: referral
            partners were over-predicted by 9% in sample and +28% against the truth on the
            holdout (README, "Models"). ``()`` turns it off.
        refit: After evaluation on the holdout, refit the chosen configuration on all rows
            (training + holdout cohorts) for the registered model; holdout metrics are the
            pre-refit model's.
        interval_coverage: Target coverage of the revenue prediction intervals.
        interval_method: ``normalized`` (split conformal on ``|y - mu| / mu ** (power / 2)``
            over all out-of-fold rows: nominal marginal coverage) or ``mondrian`` (per
            prediction bin; over-covers where most partners realise zero). See
            :mod:`partnerscore.models.intervals`.
        interval_by_age: ``normalized`` intervals with one conformal quantile per onboarding
            age of the out-of-fold rows (nominal coverage at each age, whatever a batch's age
            mix); false: one pooled quantile.
        portfolio_variance: The variance model of portfolio (segment) intervals. ``bins``
            (default): per prediction bin the mean of the out-of-fold squared relative errors,
            partners independent; conservative (88% / 93% of holdout tier and region cells
            at a nominal 80% on 5k / 20k programs). ``ratio_level``: per bin the ratio
            ``sum((y - mu)^2) / sum(mu^2)`` plus a level error shared by a signing-month
            cohort; half as wide and a little under nominal (73.5% / 75.8%). See
            :mod:`partnerscore.models.intervals` and the README ("Forecast file").
        bootstrap_rounds: Partner-level bootstrap resamples for standard errors.
        plots: Log the run's six plots (``plots/``: importance and SHAP summary per head,
            calibration, lift). ``false`` skips them (about 2 s of a run on a 400-partner
            program; for sweeps and scheduled retrains nobody reads the plots of); every other
            artifact and metric is the same.
        revenue: Default revenue-head parameters.
        engagement: Default engagement-head parameters.
        experiment: MLflow experiment name.
        registered_model: MLflow registered model name.
        promotion_margin: Relative improvement the challenger needs on the primary metric.
        max_portfolio_bias: Largest |holdout revenue portfolio bias| (pre-refit, as logged
            by the training run) a challenger may have to be promoted without ``--force``.
        portfolio_bias_z: The gate refuses when ``|bias| - z * s.e. > max_portfolio_bias``,
            i.e. when the bias is beyond the limit by more than its sampling noise (partner
            bootstrap s.e., logged by the run). Realised revenue is heavy-tailed: the s.e. is
            ~15% at 5,000 partners, ~20-25% at 2,000. ``0`` applies the limit literally.
        baseline_gate: What the promotion gate asks of each head (revenue normalized Gini,
            engagement ROC AUC) against its best baseline on the challenger's own holdout,
            read from the training run's ``compare_*`` metrics (GBM minus the best baseline,
            paired partner-bootstrap s.e.). ``not_worse`` (default): refused when a head is
            worse than its baseline beyond the noise, ``diff < -baseline_gate_z * s.e.``.
            ``better``: refused unless both heads beat their baselines beyond the noise,
            ``diff > baseline_gate_z * s.e.``. Measured at z 2 (README, "Models"):
            ``better`` refused all 12 programs of 2,000 and 5,000 partners (the engagement
            head's margin over the logistic baseline is within its noise at these sizes),
            ``not_worse`` none of them, and ``not_worse`` refuses the 150-partner models whose
            revenue Gini fell furthest below the scorecard's (3 of 8; 1 of 8 with the
            unknown-category share of 2026-12-07). A run that logged no
            comparison or no s.e. (before 2026-12-02, or ``bootstrap_rounds: 0``) is reported,
            not gated.
        baseline_gate_z: The noise allowance of ``baseline_gate`` in s.e. of the difference
            (``0``: the sign of the difference alone).
        segment_bias_min_partners: Tier and region segments of the holdout with at least this
            many partners have their revenue bias read against ``max_portfolio_bias`` (plus
            ``portfolio_bias_z`` s.e.) in the run's ``holdout_revenue_segment*`` metrics; a
            report, not a gate.
    """

    seed: int = 7
    trials: int = Field(default=5, ge=0)
    timeout_seconds: float | None = None
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    min_training_partners: int = Field(default=50, ge=1)
    calibration_share: float = Field(default=0.15, gt=0, lt=1)
    calibration: Literal["auto", "sigmoid", "beta", "smooth_isotonic", "isotonic"] = "auto"
    calibration_candidates: tuple[Literal["sigmoid", "beta", "smooth_isotonic"], ...] = Field(
        default=("sigmoid", "beta", "smooth_isotonic"), min_length=1
    )
    engagement_refit: bool = True
    engagement_segment_columns: tuple[str, ...] = ("age_days", "tier")
    monotone: bool = True
    folds: int = Field(default=3, ge=1)
    tweedie_variance_power: float = Field(default=1.1, gt=1, lt=2)
    revenue_recalibration: bool = True
    recalibration_cv: Literal["partner", "time", "auto"] = "auto"
    recalibration_partner_folds: int = Field(default=4, ge=2)
    segment_recalibration: bool = True
    segment_recalibration_columns: tuple[str, ...] = ("age_days",)
    segment_recalibration_prior_sd: float | None = Field(default=None, gt=0)
    segment_recalibration_min_partners: int = Field(default=30, ge=2)
    segment_balance_columns: tuple[str, ...] = ("tier", "partner_type")
    refit: bool = True
    interval_coverage: float = Field(default=0.8, gt=0, lt=1)
    interval_method: Literal["normalized", "mondrian"] = "normalized"
    interval_by_age: bool = True
    portfolio_variance: Literal["bins", "ratio_level"] = "bins"
    bootstrap_rounds: int = Field(default=200, ge=0)
    plots: bool = True
    revenue: HeadParams = HeadParams()
    engagement: HeadParams = HeadParams()
    experiment: str = "partnerscore"
    registered_model: str = "partnerscore"
    promotion_margin: float = Field(default=0.01, ge=0)
    max_portfolio_bias: float = Field(default=0.1, gt=0)
    portfolio_bias_z: float = Field(default=2.0, ge=0)
    baseline_gate: Literal["not_worse", "better"] = "not_worse"
    baseline_gate_z: float = Field(default=2.0, ge=0)
    segment_bias_min_partners: int = Field(default=200, ge=1)
