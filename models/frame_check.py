"""Strict checks of a feature frame handed to a model from outside the pipeline.

The pipeline's own frames are right by construction; a frame built by a user (the Python API,
``partnerscore score --features FILE``, an MLflow client) may miss columns, carry text in
numeric columns or categories the model never saw. :func:`check_feature_frame` says so in one
line naming the column and row, instead of scoring silently wrong numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from partnerscore.features.contract import END_DATE, FIRST_DATE
from partnerscore.features.core import (
    MAX_DAYS,
    PartnerscoreError,
    as_of_dates,
    quoted,
    visible,
)
from partnerscore.features.registry import FeatureSpec, value_range
from partnerscore.models.bundle import PartnerModel, respellings

ID_COLUMNS = ("partner_id", "as_of")
AGE = "age_days"
NOT_AN_AGE = f"is not an onboarding age (0 to {MAX_DAYS:,} days)"
"""What an ``age_days`` value :func:`impossible_ages` finds is, in messages."""


def out_of_range(spec: FeatureSpec, values: np.ndarray) -> tuple[np.ndarray, str]:
    """Where a numeric feature's finite values are impossible, and what they are, in messages.

    ``age_days`` is an onboarding age (:func:`impossible_ages`); other features must lie in their
    unit's range (:func:`~partnerscore.features.registry.value_range`: a share from 0 to 1, a
    count from 0). Missing and infinite values are not flagged here. A unit with no declared
    range (a model from another registry) flags nothing.
    """
    if spec.name == AGE:
        return impossible_ages(values), NOT_AN_AGE
    bounds = value_range(spec)
    if bounds is None:
        return np.zeros(len(values), dtype=bool), ""
    lo, hi = bounds
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(values) & ((values < lo) | (values > hi))
    span = f"{lo:g} or more" if np.isinf(hi) else f"{lo:g} to {hi:g}"
    why = f"is outside the range of its unit ({spec.unit}: {span})"
    if spec.unit == "share":
        why += "; a share is a fraction, not a percentage"
    return bad, why


def impossible_ages(values: np.ndarray) -> np.ndarray:
    """Where ``age_days`` values are below 0 or past :data:`~partnerscore.features.core.MAX_DAYS`.

    Such a value is no onboarding age (a negative one, or one of more than 100 years); a missing
    one is not impossible.
    """
    return (values < 0) | (values > MAX_DAYS)


@dataclass
class FrameCheck:
    """What :func:`check_feature_frame` found (errors have been raised already).

    Categories the model never saw are no error: they are scored as missing and listed by
    :func:`unseen_categories` in every score row (``score_features``), not here.

    Attributes:
        missing: Feature columns absent from the frame (allowed only with ``allow_missing``).
    """

    missing: list[str] = field(default_factory=list)


def check_feature_frame(
    model: PartnerModel, frame: pd.DataFrame, *, source: str = "features", allow_missing=False
) -> FrameCheck:
    """Check a feature frame against the model's feature contract.

    Args:
        model: The model whose features are expected.
        frame: partner_id, as_of and the feature columns.
        source: Name used in messages (a file path or "features").
        allow_missing: Accept absent feature columns (scored as all-missing, as when an optional
            source table is not supplied); otherwise a missing column is an error.

    Returns:
        The missing feature columns (categories the model never saw: :func:`unseen_categories`).

    Raises:
        PartnerscoreError: Missing id columns, missing feature columns (unless allowed), values
            that are not numbers in numeric columns, infinite numbers (an empty cell or NaN is
            a missing value), an ``age_days`` below 0 or above
            :data:`~partnerscore.features.core.MAX_DAYS`, a value outside its unit's range
            (:func:`out_of_range`), non-dates in as_of or dates outside
            the data contract's years (1900-2199), duplicate (partner_id, as_of) rows: one line
            naming the column, the row and the partner. A column name given twice, or columns
            with several levels: one line naming it.
    """
    if isinstance(frame.columns, pd.MultiIndex):
        raise PartnerscoreError(f"{source}: columns with several levels; give each one name")
    twice = frame.columns[frame.columns.duplicated()]
    if len(twice):
        raise PartnerscoreError(f"{source}: column {quoted(str(twice[0]))} appears twice")
    for col in ID_COLUMNS:
        if col not in frame.columns:
            raise PartnerscoreError(f"{source}: missing column '{col}'")
    frame = frame.reset_index(drop=True)
    as_of = as_of_dates(source, frame)  # ISO 8601 only, as scores files and --cutoffs
    ids = frame["partner_id"]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise PartnerscoreError(f"{source}: column 'partner_id' row {row + 1}: missing")
    years = as_of.dt.year.to_numpy()
    outside = (years < FIRST_DATE.year) | (years >= END_DATE.year)
    if outside.any():  # a typo (2200 for 2020): scores dated where no data can be
        row = int(np.flatnonzero(outside)[0])
        raise PartnerscoreError(
            f"{source}: column 'as_of' row {row + 1}: {quoted(frame['as_of'].iloc[row])} is "
            f"outside the years {FIRST_DATE.year}-{END_DATE.year - 1} "
            f"(partner {quoted(ids.iloc[row])})"
        )
    dup = pd.DataFrame({"p": ids.astype(str), "t": as_of}).duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise PartnerscoreError(
            f"{source}: row {row + 1}: duplicate (partner_id, as_of) {quoted(ids.iloc[row])}"
        )
    missing = [s.name for s in model.feature_specs if s.name not in frame.columns]
    if missing and not allow_missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise PartnerscoreError(
            f"{source}: missing feature column '{missing[0]}'{more} (the model needs every "
            "feature; build the frame with partnerscore build/score or allow missing columns)"
        )
    for spec in model.feature_specs:
        if spec.name not in frame.columns or spec.kind == "categorical":
            continue
        col = frame[spec.name]
        if pd.api.types.is_bool_dtype(col.dtype):
            continue
        if pd.api.types.is_numeric_dtype(col.dtype):
            numbers = col
        else:
            numbers = pd.to_numeric(col, errors="coerce")
            wrong = (numbers.isna() & col.notna()).to_numpy()
            if wrong.any():
                row = int(np.flatnonzero(wrong)[0])
                raise PartnerscoreError(
                    f"{source}: column '{spec.name}' row {row + 1}: {quoted(col.iloc[row])} is "
                    "not a number (leave the cell empty for a missing value) "
                    f"(partner {quoted(ids.iloc[row])})"
                )
        _check_range(spec, numbers.to_numpy(dtype=float, na_value=np.nan), col, ids, source)
    return FrameCheck(missing=missing)


def unseen_categories(model: PartnerModel, frame: pd.DataFrame) -> np.ndarray:
    """Per row, the categories the model never saw: ``feature=value`` pairs joined by ``; ``.

    The one rule of the ``unseen_categories`` column, for every path: ``score --features``, the
    Python API and the MLflow model (:func:`check_feature_frame`), and every score row
    (:func:`~partnerscore.models.scoring.score_features`: raw tables whole, in groups and on
    Spark). The model scores such a value as missing. A value equal to exactly one known
    category but for case is not listed (:func:`~partnerscore.models.bundle.respellings`: it is
    read as that category); invisible characters are shown as escapes
    (:func:`~partnerscore.features.core.visible`). Feature columns the frame lacks are skipped.

    Args:
        model: The model whose categories are known.
        frame: Feature rows (any index; read by position).

    Returns:
        An object array, one text per row ("" when the row has none).
    """
    unseen = np.full(len(frame), "", dtype=object)
    for spec in model.feature_specs:
        if spec.kind != "categorical" or spec.name not in frame.columns:
            continue
        col = frame[spec.name].reset_index(drop=True)
        categories = model.categories.get(spec.name, [])
        if (col.isin(categories) | col.isna()).all():
            continue  # every value known or missing: the fast path
        text = col.astype(object).where(col.notna(), None)
        new = text.notna().to_numpy() & ~text.isin(categories).to_numpy()
        if new.any():  # a category known in another case is read as it: not unseen
            found = respellings(pd.unique(text[new].to_numpy(dtype=object)), categories)
            new &= ~text.isin(list(found)).to_numpy()
        if new.any():
            pairs = np.array([f"{spec.name}={visible(str(v))}" for v in text[new]], dtype=object)
            unseen[new] = np.where(unseen[new] == "", pairs, unseen[new] + "; " + pairs)
    return unseen


def _check_range(
    spec: FeatureSpec, values: np.ndarray, col: pd.Series, ids: pd.Series, source: str
) -> None:
    """Stop on an infinite value (NaN is missing, and allowed) or an impossible one.

    An infinite feature is scored as the largest value the trees saw, silently; a negative age
    or one past :data:`~partnerscore.features.core.MAX_DAYS` (100 years) is no onboarding age;
    a value outside its unit's range (:func:`out_of_range`) was not built by the pipeline.
    """
    bad = np.isinf(values)
    why = "is not a finite number (leave the cell empty for a missing value)"
    if not bad.any():
        bad, why = out_of_range(spec, values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PartnerscoreError(
            f"{source}: column '{spec.name}' row {row + 1}: {quoted(col.iloc[row])} {why} "
            f"(partner {quoted(ids.iloc[row])})"
        )


INFINITE_SHOWN = 3
"""Infinite features named in a reason; more are counted."""


def infinite_features(model: PartnerModel, frame: pd.DataFrame) -> np.ndarray:
    """Per row of a feature frame built from raw tables, why it cannot be scored ("" if it can).

    Amounts up to the largest float are valid raw data, but two of one partner add up to
    ``inf`` in its sums (won amount to date, and the average won size from it). The trees would
    score an infinite feature as the largest value they saw, a confident score from no real
    number: such a row is rejected instead, naming the feature.

    Args:
        model: The model whose numeric features are read.
        frame: The feature rows (features the frame lacks are skipped).

    Returns:
        An object array of reasons, e.g. "feature 'deals_won_amount_todate' is infinite (its raw
        values add past the float range)"; "" for rows without an infinite feature.
    """
    names, masks = [], []
    for spec in model.feature_specs:
        if spec.kind == "categorical" or spec.name not in frame.columns:
            continue
        col = frame[spec.name]
        if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            continue
        bad = np.isinf(col.to_numpy(dtype="float64", na_value=np.nan))
        if bad.any():
            names.append(spec.name)
            masks.append(bad)
    reasons = np.full(len(frame), "", dtype=object)
    if not names:
        return reasons
    hits = np.column_stack(masks)
    for row in np.flatnonzero(hits.any(axis=1)):
        found = [names[j] for j in np.flatnonzero(hits[row])]
        reasons[row] = _infinite_reason(found)
    return reasons


def _infinite_reason(names: list[str]) -> str:
    if len(names) == 1:
        return f"feature '{names[0]}' is infinite (its raw values add past the float range)"
    shown = ", ".join(f"'{name}'" for name in names[:INFINITE_SHOWN])
    more = len(names) - INFINITE_SHOWN
    shown += f" and {more} more" if more > 0 else ""
    return f"features {shown} are infinite (their raw values add past the float range)"
