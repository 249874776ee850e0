"""Configuration for the model heads and the scoring policy."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from partnerscore.features.core import FrozenConfig, case_key

SEGMENT_KEYS = ("region", "tier", "partner_type")


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
    # share of each categorical column's training values made missing for the booster, so a
    # category unseen at scoring (scored as missing) lands near the average one, not on
    # whichever side a split put last (models/heads.py: _with_unknown_categories)
    unknown_category_share: float = Field(default=0.1, ge=0, lt=0.5)


class LayerWeights(FrozenConfig):
    """Shares of the three scorecard layers in one maturity band (they add up to 1).

    A layer's score points are multiplied by ``3 x share``: equal shares (1/3 each) reproduce
    the model's own composite exactly; a share of 0.45 makes that layer count 1.35 times.
    """

    strategic: float = Field(ge=0, le=1)
    execution: float = Field(ge=0, le=1)
    results: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> LayerWeights:
        total = self.strategic + self.execution + self.results
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"layer weights must add up to 1 (they add up to {total:g})")
        return self

    def multipliers(self) -> tuple[float, float, float]:
        """Multipliers of the strategic, execution and results score points."""
        return (3 * self.strategic, 3 * self.execution, 3 * self.results)


class MaturityBand(FrozenConfig):
    """Onboarding ages from ``start_day`` up to the next band's start (the last is open).

    Attributes:
        start_day: First onboarding day of the band (the first band starts at 0).
        weights: Layer shares applied to partners in this band.
    """

    start_day: int = Field(ge=0)
    weights: LayerWeights


DEFAULT_BANDS = (
    MaturityBand(start_day=0, weights=LayerWeights(strategic=0.40, execution=0.40, results=0.20)),
    MaturityBand(start_day=46, weights=LayerWeights(strategic=0.35, execution=0.40, results=0.25)),
    MaturityBand(start_day=91, weights=LayerWeights(strategic=0.30, execution=0.35, results=0.35)),
    MaturityBand(start_day=181, weights=LayerWeights(strategic=0.25, execution=0.30, results=0.45)),
)


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
        maturity_bands: Onboarding-age bands with layer weights, ordered by ``start_day`` from
            0 (default 0-45, 46-90, 91-180, 181+ days: strategy and execution count more early,
            results later).
        segment_adjustments: Factors by ``region``, ``tier`` and ``partner_type`` value
            (unlisted values: 1.0); a partner's factor is the product of its three, applied to
            the band-weighted score (then clipped to 0-100).
        tier_change_batches: A new tier (from the smoothed score) is adopted once the raw score
            has been in it for this many consecutive batches...
        tier_change_margin: ...or as soon as the smoothed score is this many points past the
            tier boundary. Keep it at least ``guardrail_threshold / smoothing_window``: then a
            single noisy batch can never flip a tier.
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
    maturity_bands: tuple[MaturityBand, ...] = DEFAULT_BANDS
    segment_adjustments: dict[str, dict[str, float]] = {}
    tier_change_batches: int = Field(default=2, ge=1)
    tier_change_margin: float = Field(default=10.0, ge=0)

    @field_validator("maturity_bands")
    @classmethod
    def _bands(cls, value: tuple[MaturityBand, ...]) -> tuple[MaturityBand, ...]:
        if not value:
            raise ValueError("needs at least one band, starting at day 0")
        starts = [band.start_day for band in value]
        if starts[0] != 0:
            raise ValueError(f"the first band must start at day 0 (it starts at {starts[0]})")
        for a, b in zip(starts, starts[1:], strict=False):
            if b <= a:
                raise ValueError(f"bands must be in increasing start_day order ({a}, then {b})")
        return value

    @field_validator("segment_adjustments")
    @classmethod
    def _adjustments(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for key, factors in value.items():
            if key not in SEGMENT_KEYS:
                raise ValueError(f"unknown segment '{key}' (expected {', '.join(SEGMENT_KEYS)})")
            seen: dict[str, str] = {}
            for name, factor in factors.items():
                if not 0 < factor <= 10:
                    raise ValueError(f"{key} '{name}': factor {factor} is outside (0, 10]")
                other = seen.setdefault(case_key(name), name)
                if other != name:  # segment values match their factor in any case
                    raise ValueError(
                        f"{key} '{other}' and '{name}' are one value (case is ignored): give "
                        "one factor"
                    )
        return value

    def band_names(self) -> list[str]:
        """Readable band names such as ``0-45``, ``46-90``, ``181+`` (days)."""
        starts = [band.start_day for band in self.maturity_bands]
        ends = [f"-{s - 1}" for s in starts[1:]] + ["+"]
        return [
            f"{a}{b}" if b == "+" or int(b[1:]) != a else str(a)
            for a, b in zip(starts, ends, strict=True)
        ]

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
