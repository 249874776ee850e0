"""Controlled experiments, data side: the assignment-table contract and stratified randomisation.

An assignment table has one row per (experiment, partner): which arm the partner was randomised
to, in which stratum, when (``assigned_at``: outcomes are read from that instant on, pre-period
values strictly before it), with what design share, plus the pre-period score and features
(``pre_*`` columns) used as covariates by the analysis. ``partnerscore experiment assign`` and
the effect simulator (:mod:`partnerscore.features.experiment_sim`) both write it;
``partnerscore experiment analyze`` reads it.

Randomisation is seeded per stratum (seed, experiment name and stratum key hashed together) over
the partner ids sorted within the stratum, so the same inputs and seed give the same table
whatever the row order of the input, and adding a stratum does not reshuffle the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from partnerscore.features.contract import load_pandera
from partnerscore.features.core import OptionError, PartnerscoreError

if TYPE_CHECKING:
    import pandera.pandas as pa

# declared columns of an assignment table, in file order; pre_* covariates follow
ASSIGNMENT_COLUMNS = {
    "experiment": "Experiment name.",
    "partner_id": "Partner randomised.",
    "arm": "Arm the partner was randomised to (the first arm listed is the control).",
    "stratum": "Stratum key: the stratification columns' values joined by '|' ('all' if none).",
    "assigned_at": "Instant of assignment: outcomes from here on, covariates strictly before.",
    "target_share": "Designed probability of this arm (used by the sample-ratio-mismatch check).",
    "seed": "Randomisation seed.",
}
OPTIONAL_ASSIGNMENT_COLUMNS = {
    "pre_as_of": "as_of of the pre-period score the partner was assigned on.",
    "pre_score": "Composite score (0-100) before assignment.",
    "pre_pred_revenue": "Expected horizon revenue before assignment.",
    "pre_pred_engagement": "Engagement likelihood before assignment.",
    "pre_score_tier": "Score tier before assignment.",
    "pre_quadrant": "Revenue x engagement quadrant before assignment.",
    "pre_<feature>": "Every feature value of the pre-period score row (metric registry names).",
}
NO_STRATUM = "all"


def assignment_schema() -> pa.DataFrameSchema:
    """The pandera schema every assignment table satisfies (``pre_*`` columns ride along)."""
    pa = load_pandera()  # without pandas-on-Spark: its import and pandas-version warning
    return pa.DataFrameSchema(
        {
            "experiment": pa.Column(str, pa.Check.str_length(min_value=1)),
            "partner_id": pa.Column(str),
            "arm": pa.Column(str, pa.Check.str_length(min_value=1)),
            "stratum": pa.Column(str),
            "assigned_at": pa.Column("datetime64[us]", coerce=True),
            "target_share": pa.Column(float, [pa.Check.gt(0), pa.Check.le(1)], coerce=True),
            "seed": pa.Column(int, coerce=True),
        },
        unique=["experiment", "partner_id"],
        strict=False,
        name="assignment",
    )


def parse_arms(text: str) -> tuple[str, ...]:
    """``control,treatment`` -> ("control", "treatment"); at least two distinct names."""
    arms = tuple(part.strip() for part in str(text).split(",") if part.strip())
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise OptionError(
            f"--arms: expected at least two distinct comma-separated names, got '{text}'"
        )
    return arms


def arm_shares(arms: Sequence[str], fraction: float) -> dict[str, float]:
    """Design share of each arm: the control (first) gets ``1 - fraction``, the rest split it.

    Args:
        arms: Arm names, control first.
        fraction: Share of partners in the treatment arms together, strictly between 0 and 1.

    Returns:
        Arm -> probability, summing to 1.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise OptionError(f"--fraction: expected a share between 0 and 1, got {fraction}")
    treated = list(arms[1:])
    shares = {arms[0]: 1.0 - float(fraction)}
    shares.update({arm: float(fraction) / len(treated) for arm in treated})
    return shares


def _stratum_seed(seed: int, salt: str, stratum: str) -> list[int]:
    digest = hashlib.sha256(f"{salt}\x1f{stratum}".encode()).digest()
    return [int(seed) & 0xFFFFFFFF, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()]


def assign_arms(
    partner_ids: Sequence[str],
    strata: Sequence[str],
    arms: Sequence[str],
    fraction: float,
    seed: int,
    salt: str = "",
) -> np.ndarray:
    """Stratified complete randomisation.

    Within each stratum the ids are sorted and shuffled with a generator seeded by
    (``seed``, ``salt``, stratum); the first ``n_treated`` of the shuffle go to the treatment
    arms in turn, the rest to the control. ``n_treated = floor(n * fraction + u)`` with ``u``
    uniform from the same generator, so every partner is treated with probability exactly
    ``fraction`` and each stratum's split is within one partner of its design.

    Args:
        partner_ids: Unique partner ids.
        strata: Stratum key per partner.
        arms: Arm names, control first.
        fraction: Share of partners in the treatment arms together.
        seed: Random seed.
        salt: Mixed into every stratum's seed (the experiment name), so two experiments with the
            same seed are randomised independently.

    Returns:
        The arm of each partner, aligned with ``partner_ids``.
    """
    arm_shares(arms, fraction)  # validates
    ids = pd.Series(partner_ids, dtype=object).astype(str).to_numpy()
    keys = pd.Series(strata, dtype=object).astype(str).to_numpy()
    if len(ids) != len(keys):
        raise ValueError("partner_ids and strata differ in length")
    if len(set(ids)) != len(ids):
        raise PartnerscoreError("assignment: partner ids are not unique")
    out = np.empty(len(ids), dtype=object)
    treated_arms = np.array(arms[1:], dtype=object)
    names, codes = np.unique(keys, return_inverse=True)
    for code, stratum in enumerate(names):
        rows = np.flatnonzero(codes == code)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        rng = np.random.default_rng(_stratum_seed(seed, salt, str(stratum)))
        order = rng.permutation(len(rows))
        n_treated = int(np.floor(len(rows) * float(fraction) + rng.random()))
        offset = int(rng.integers(len(treated_arms)))
        labels = np.full(len(rows), arms[0], dtype=object)
        k = np.arange(n_treated)
        labels[:n_treated] = treated_arms[(k + offset) % len(treated_arms)]
        out[rows[order]] = labels
    return out


def stratum_keys(frame: pd.DataFrame, columns: Sequence[str], source: str = "input") -> np.ndarray:
    """The stratum key of each row: the ``columns``' values joined by ``|`` (``all`` if none).

    Raises:
        PartnerscoreError: A stratification column is missing (names the source and column).
    """
    if not columns:
        return np.full(len(frame), NO_STRATUM, dtype=object)
    for col in columns:
        if col not in frame.columns:
            raise PartnerscoreError(f"{source}: missing column '{col}' (given in --stratify)")
    parts = [frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + "|" + part
    return key.to_numpy(dtype=object)


__all__ = [
    "ASSIGNMENT_COLUMNS",
    "NO_STRATUM",
    "OPTIONAL_ASSIGNMENT_COLUMNS",
    "arm_shares",
    "assign_arms",
    "assignment_schema",
    "parse_arms",
    "stratum_keys",
]
