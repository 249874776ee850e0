"""The table-compiled TreeSHAP equals LightGBM's pred_contrib exactly."""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.models.treeshap import TreeShapTables


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.exponential(size=n)
    x2[rng.random(n) < 0.2] = np.nan  # missing values
    x3 = np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n))  # many exact zeros
    cat = pd.Categorical(rng.choice(["a", "b", "c", "d", "e"], n), categories=list("abcde"))
    cat[rng.random(n) < 0.1] = np.nan
    X = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "cat": cat})
    signal = x1 + np.nan_to_num(x2) * (cat == "b") - 0.5 * (x3 == 0) + (cat == "d")
    return X, signal, rng


@pytest.mark.parametrize(
    "params",
    [
        {"num_leaves": 8, "max_depth": 3},
        {"num_leaves": 15, "max_depth": 5, "zero_as_missing": True},
        {"num_leaves": 4, "max_depth": 2, "use_missing": False},
        {"num_leaves": 31, "max_depth": 6, "min_child_samples": 5},  # too big for tables
    ],
)
@pytest.mark.parametrize("objective", ["tweedie", "binary"])
def test_matches_pred_contrib(params, objective):
    X, signal, rng = data()
    if objective == "binary":
        y = (signal + rng.normal(size=len(X)) > 0.5).astype(int)
        model = lgb.LGBMClassifier(n_estimators=40, verbose=-1, **params).fit(X, y)
    else:
        y = np.exp(signal) * (rng.random(len(X)) < 0.5)
        model = lgb.LGBMRegressor(objective="tweedie", n_estimators=40, verbose=-1, **params).fit(
            X, y
        )
    booster = model.booster_
    tables = TreeShapTables(booster)
    X_new, _, _ = data(500, seed=1)
    ours = tables.contributions(X_new)
    ref = booster.predict(X_new, pred_contrib=True)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    np.testing.assert_allclose(ours.sum(axis=1), booster.predict(X_new, raw_score=True), atol=1e-10)


def test_row_path_for_large_trees_is_exact_too():
    X, signal, _ = data()
    booster = lgb.LGBMRegressor(n_estimators=10, num_leaves=16, verbose=-1).fit(X, signal).booster_
    tables = TreeShapTables(booster, max_internal=2)
    assert all(t.table is None for t in tables.trees)
    np.testing.assert_allclose(
        tables.contributions(X), booster.predict(X, pred_contrib=True), atol=1e-10
    )


def test_unseen_category_and_single_leaf_trees():
    X, _, _ = data()
    y = np.zeros(len(X))
    y[:10] = 1.0  # nearly constant: several trees are single leaves
    booster = (
        lgb.LGBMRegressor(n_estimators=5, min_child_samples=500, verbose=-1).fit(X, y).booster_
    )
    tables = TreeShapTables(booster)
    np.testing.assert_allclose(
        tables.contributions(X), booster.predict(X, pred_contrib=True), atol=1e-12
    )


def reference_contributions(tables: TreeShapTables, X: np.ndarray) -> np.ndarray:
    """The table path one split at a time: each split's own rule, then the tree's table row."""
    cols = np.ascontiguousarray(X.T)
    acc = np.zeros((tables.n_features + 1, X.shape[0]))
    for tree in tables.trees:
        pattern = np.zeros(X.shape[0], dtype=np.int64)
        for s, split in enumerate(tree.splits):
            pattern |= split.goes_left(cols[split.feature]).astype(np.int64) << s
        acc[tree.features] += tree.table_t[:, pattern]
    acc[-1] = tables.base
    return acc.T


def _small_tweedie(X, y, zero_as_missing: bool):
    """A small tweedie booster (15 trees of depth 3) for the value-code tests."""
    return (
        lgb.LGBMRegressor(
            objective="tweedie",
            n_estimators=15,
            num_leaves=8,
            max_depth=3,
            min_child_samples=5,
            zero_as_missing=zero_as_missing,
            verbose=-1,
        )
        .fit(X, y)
        .booster_
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), zero_as_missing=st.booleans())
def test_value_codes_give_the_same_bits_as_each_split_rule(seed, zero_as_missing):
    """Codes per feature and lookups per tree equal the per-split rules, bit for bit."""
    X, signal, rng = data(800, seed=seed % 1000)
    y = np.exp(signal) * (rng.random(len(X)) < 0.5)
    booster = _small_tweedie(X, y, zero_as_missing)
    tables = TreeShapTables(booster)
    matrix = TreeShapTables.matrix(X).copy()
    # extreme, missing, zero, negative, huge and unseen-category values
    special = np.array([np.nan, 0.0, -0.0, 1e-36, -1e300, 1e300, np.inf, -np.inf, 7.0, -2.5])
    pick = rng.random(matrix.shape) < 0.3
    matrix[pick] = rng.choice(special, size=pick.sum())
    thresholds = [s.threshold for t in tables.trees for s in t.splits if s.categories is None]
    at = rng.random(matrix.shape) < 0.1  # values exactly on a threshold
    matrix[at] = rng.choice(thresholds, size=at.sum()) if thresholds else 0.0
    with np.errstate(invalid="ignore"):
        ours = tables.contributions(matrix, batch_rows=300)
        ref = reference_contributions(tables, matrix)
    np.testing.assert_array_equal(ours, ref)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), zero_as_missing=st.booleans())
def test_feature_major_contributions_from_gathered_codes_are_the_same_bits(seed, zero_as_missing):
    """What-if's path: a feature-major block of rows gathered from a base block, some values set,
    its codes gathered from the base block's and only the set values coded anew
    (``contributions_by_feature``), against ``contributions`` of the block, bit for bit, in one
    batch and in several."""
    X, signal, rng = data(600, seed=seed % 1000)
    y = np.exp(signal) * (rng.random(len(X)) < 0.5)
    booster = _small_tweedie(X, y, zero_as_missing)
    tables = TreeShapTables(booster)
    base = TreeShapTables.feature_major(X)
    base_codes = tables.codes(base)
    rows = rng.integers(0, base.shape[1], 900)
    block = np.take(base, rows, axis=1)
    codes = {f: np.take(c, rows) for f, c in base_codes.items()}
    special = np.array([np.nan, 0.0, -0.0, 1e-300, -1e300, 1e300, np.inf, -np.inf, 0.5, -2.5])
    for f in range(block.shape[0] - 1):  # the numeric features (the last is the category)
        sel = rng.random(block.shape[1]) < 0.2
        block[f, sel] = np.where(
            rng.random(sel.sum()) < 0.5, rng.choice(special, sel.sum()), rng.normal(size=sel.sum())
        )
        code = tables.code(f, block[f, sel])
        assert (code is None) == (f not in codes)
        if code is not None:
            codes[f][sel] = code
    with np.errstate(invalid="ignore"):
        expected = tables.contributions(block.T)
        for batch_rows in (16384, 250):
            ours = tables.contributions_by_feature(block, codes, batch_rows=batch_rows)
            np.testing.assert_array_equal(ours.T, expected)
            np.testing.assert_array_equal(tables.contributions_by_feature(block).T, expected)
