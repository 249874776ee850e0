"""Configuration for the model heads and the scoring policy."""

from __future__ import annotations

from pydantic import Field, field_validator

from partnerscore.features.core import FrozenConfig


class HeadParams(FrozenConfig):
    """LightGBM parameters shared by both heads (tuned values override these).

    Trees are small on purpose: every scored row carries exact SHAP drivers. Trees with at most
    10 splits are compiled to lookup tables (``models/treeshap.py``); larger ones fall back to
    LightGBM's ``pred_contrib``, whose cost grows with trees x leaves x depth^2 (2 cores: ~17k
    rows/s for both heads at these defaults, ~2k at 300 trees of 15 leaves, depth 5). On the
    simulated program, depth 3 is as accurate as deeper trees. See ``bench/bench_score.py``.
    """

    n_estimators: int = Field(default=120, ge=1)
    learning_rate: float = Field(default=0.08, gt=0)
    num_leaves: int = Field(default=8, ge=2)
    max_depth: int = Field(default=3, ge=1)
    min_child_samples: int = Field(default=40, ge=1)
    subsample: float = Field(default=0.8, gt=0, le=1)
    subsample_freq: int = 1
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)
    reg_lambda: float = Field(default=1.0, ge=0)
    reg_alpha: float = Field(default=0.0, ge=0)
    n_jobs: int = 1


class PolicyConfig(FrozenConfig):
    """Scoring policy: composite score, tiers, quadrants, provisional flag, smoothing, guardrails.

    Attributes:
        revenue_weight: Weight of the revenue percentile in the composite score (rest: engagement).
        tier_cutoffs: Composite-score lower bounds of tiers, best first (name -> min score).
        revenue_high_quantile: Predicted-revenue quantile above which revenue counts as high.
        engagement_high: Engagement probability at or above which engagement counts as high.
        min_observation_days: Partners younger than this are flagged provisional.
        smoothing_window: Number of most recent scores in the moving average.
        guardrail_threshold: Score change (points) beyond which a swing is flagged.
        playbook_path: Optional YAML file replacing the shipped intervention playbook.
        top_drivers: Number of positive and of negative drivers per head in the output.
        scope_tolerance_days: Partners older than the oldest trained onboarding age plus this
            are ``out_of_scope``: tier ``graduated`` and the playbook's graduated action.
    """

    revenue_weight: float = Field(default=0.5, ge=0, le=1)
    tier_cutoffs: dict[str, float] = {"A": 75.0, "B": 50.0, "C": 25.0, "D": 0.0}
    revenue_high_quantile: float = Field(default=0.75, gt=0, lt=1)
    engagement_high: float = Field(default=0.5, gt=0, lt=1)
    min_observation_days: int = Field(default=60, ge=0)
    smoothing_window: int = Field(default=3, ge=1)
    guardrail_threshold: float = Field(default=20.0, gt=0)
    playbook_path: str | None = None
    top_drivers: int = Field(default=3, ge=1)
    scope_tolerance_days: int = Field(default=90, ge=0)

    @field_validator("tier_cutoffs")
    @classmethod
    def _tiers(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("needs at least one tier, e.g. {'A': 75, 'B': 50, 'C': 25, 'D': 0}")
        for name, bound in value.items():
            if not str(name).strip():
                raise ValueError("tier names must not be empty")
            if not 0 <= bound <= 100:
                raise ValueError(f"tier '{name}': lower bound {bound} is outside 0-100")
        return value
