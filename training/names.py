"""Names the training job and the registry commands share, in a module that imports nothing.

``partnerscore models`` reads the aliases and the drift rule from here: importing them from
:mod:`partnerscore.training.train` took LightGBM, scikit-learn and SciPy with them (~1.4 s
of the command's imports before it read the store).
"""

from __future__ import annotations

CHALLENGER = "challenger"
CHAMPION = "champion"
DRIFT_Z = 2.0
"""Out-of-fold cohort trend, in s.e., beyond which a run counts as drifting (summaries, auto)."""
HOLDOUT_ARTIFACT = "evaluation/holdout.parquet"
HOLDOUT_PREDICTIONS_ARTIFACT = "evaluation/holdout_predictions.parquet"
"""The pre-refit model's holdout predictions (partner_id, as_of, pred_revenue,
pred_engagement): what ``promote`` scores a refitted version by, on rows it never saw."""


def drifting(trend: float | None, se: float | None) -> bool:
    """Whether an out-of-fold cohort trend is beyond :data:`DRIFT_Z` s.e. (missing: no)."""
    return trend is not None and se is not None and se > 0 and abs(trend) > DRIFT_Z * se
