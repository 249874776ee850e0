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
        calibration_share: Share of the training cohorts (newest) used to calibrate engagement.
        calibration: Engagement calibration map: ``sigmoid`` (Platt; keeps the ranking),
            ``isotonic``, or ``auto`` (isotonic from 1000 calibration rows).
        engagement_refit: Refit the engagement booster on all training cohorts after the
            calibration map is fitted on the newest slice (the map is kept).
        monotone: Constrain both heads to be monotone in every numeric feature with a declared
            direction (``higher_is_better`` increasing, ``lower_is_better`` decreasing).
        folds: Number of expanding time-based folds used for tuning.
        revenue: Default revenue-head parameters.
        engagement: Default engagement-head parameters.
        experiment: MLflow experiment name.
        registered_model: MLflow registered model name.
        promotion_margin: Relative improvement the challenger needs on the primary metric.
    """

    seed: int = 7
    trials: int = Field(default=5, ge=0)
    timeout_seconds: float | None = None
    holdout_share: float = Field(default=0.2, gt=0, lt=1)
    calibration_share: float = Field(default=0.15, gt=0, lt=1)
    calibration: Literal["sigmoid", "isotonic", "auto"] = "sigmoid"
    engagement_refit: bool = True
    monotone: bool = True
    folds: int = Field(default=3, ge=1)
    revenue: HeadParams = HeadParams()
    engagement: HeadParams = HeadParams()
    experiment: str = "partnerscore"
    registered_model: str = "partnerscore"
    promotion_margin: float = Field(default=0.01, ge=0)
