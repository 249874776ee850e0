"""Exact path-dependent TreeSHAP for small LightGBM trees, compiled to lookup tables.

LightGBM's ``pred_contrib`` runs TreeSHAP row by row in C++: O(trees x leaves x depth^2) per
row, the cost that decides scoring speed. For one tree, a row's contributions depend only on
which way it goes at each internal node, so a tree with S internal nodes has at most 2^S
distinct contribution vectors. For the small trees partnerscore trains (S <= 7 by default) we
compute all of them once, exactly, and scoring becomes: evaluate S splits per tree, form the
pattern number, gather a table row. The result equals ``pred_contrib`` to floating-point
rounding (tested); trees larger than ``max_internal`` nodes are evaluated leaf by leaf on the
rows instead of through a table.

Per leaf, path-dependent TreeSHAP is the Shapley value of the multilinear game
``v(S) = value * prod_{j in P} (o_j if j in S else z_j)`` over the path's features P, where
``o_j`` is 1 if the row follows the path at every node on feature j and ``z_j`` the product of
the path's cover fractions (child count / node count) at those nodes; summed over leaves and
trees (Lundberg et al., 2020).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from math import factorial

import numpy as np
import pandas as pd

ZERO = 1e-35


@dataclass
class _Split:
    feature: int
    threshold: float
    categories: frozenset[int] | None
    default_left: bool
    missing: str  # "None" | "Zero" | "NaN"
    count: float

    def goes_left(self, x: np.ndarray) -> np.ndarray:
        """LightGBM's decision rule for one split on a column of feature values."""
        if self.categories is not None:
            # a missing or negative category always goes right (whatever the missing type)
            nan = np.isnan(x)
            ints = np.where(nan, -1, x).astype(np.int64)
            return ~nan & (ints >= 0) & np.isin(ints, list(self.categories))
        nan = np.isnan(x)
        if self.missing != "NaN":
            x = np.where(nan, 0.0, x)
        if self.missing == "Zero":
            missing = np.abs(x) <= ZERO
        elif self.missing == "NaN":
            missing = nan
        else:
            missing = np.zeros(x.shape, dtype=bool)
        return np.where(missing, self.default_left, x <= self.threshold)


@dataclass
class _Leaf:
    value: float
    count: float
    path: list[tuple[int, bool, float]] = field(default_factory=list)  # (split, left?, fraction)


@dataclass
class _Tree:
    splits: list[_Split]
    leaves: list[_Leaf]
    expected: float
    features: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    table: np.ndarray | None = None
    table_t: np.ndarray | None = None


def _parse(node: dict, splits: list[_Split], leaves: list[_Leaf], path: list) -> float:
    """Walk a dumped tree; returns the node's data count."""
    if "leaf_value" in node or "split_index" not in node:
        count = float(node.get("leaf_count", 0) or 0)
        leaves.append(_Leaf(value=float(node.get("leaf_value", 0.0)), count=count, path=list(path)))
        return count
    threshold = node["threshold"]
    categorical = node.get("decision_type") == "=="
    split = _Split(
        feature=int(node["split_feature"]),
        threshold=float("nan") if categorical else float(threshold),
        categories=frozenset(int(c) for c in str(threshold).split("||")) if categorical else None,
        default_left=bool(node.get("default_left", True)),
        missing=str(node.get("missing_type", "None")),
        count=float(node["internal_count"]),
    )
    index = len(splits)
    splits.append(split)
    for child, left in ((node["left_child"], True), (node["right_child"], False)):
        child_count = _count(child)
        fraction = child_count / split.count if split.count else 0.0
        _parse(child, splits, leaves, [*path, (index, left, fraction)])
    return split.count


def _count(node: dict) -> float:
    if "leaf_value" in node or "split_index" not in node:
        return float(node.get("leaf_count", 0) or 0)
    return float(node["internal_count"])


def _weights(d: int) -> np.ndarray:
    """Shapley weights |S|!(d-|S|-1)!/d! for |S| = 0..d-1."""
    return np.array([factorial(s) * factorial(d - s - 1) / factorial(d) for s in range(d)])


def _tree_shap(tree: _Tree, bits: np.ndarray) -> np.ndarray:
    """Contributions (m, len(tree.features)) for rows given by their split decisions."""
    m = bits.shape[0]
    out = np.zeros((m, len(tree.features)))
    col = {f: i for i, f in enumerate(tree.features)}
    for leaf in tree.leaves:
        if not leaf.path:
            continue
        o: dict[int, np.ndarray] = {}
        z: dict[int, float] = {}
        for split_index, left, fraction in leaf.path:
            f = tree.splits[split_index].feature
            follows = bits[:, split_index] if left else ~bits[:, split_index]
            o[f] = o[f] & follows if f in o else follows.copy()
            z[f] = z.get(f, 1.0) * fraction
        feats = list(o)
        d = len(feats)
        w = _weights(d)
        of = {f: o[f].astype(float) for f in feats}
        for i in feats:
            others = [f for f in feats if f != i]
            total = np.zeros(m)
            for size in range(d):
                for subset in itertools.combinations(others, size):
                    term = np.full(m, w[size])
                    for j in others:
                        term = term * (of[j] if j in subset else z[j])
                    total += term
            out[:, col[i]] += leaf.value * (of[i] - z[i]) * total
    return out


class TreeShapTables:
    """Exact SHAP contributions of a LightGBM booster, fast for small trees.

    Args:
        booster: A trained ``lightgbm.Booster``.
        max_internal: Trees with at most this many internal nodes are compiled to tables.
    """

    def __init__(self, booster, max_internal: int = 10) -> None:
        dump = booster.dump_model()
        self.n_features = len(dump["feature_names"])
        self.trees: list[_Tree] = []
        self.base = 0.0
        for info in dump["tree_info"]:
            splits: list[_Split] = []
            leaves: list[_Leaf] = []
            root = info["tree_structure"]
            _parse(root, splits, leaves, [])
            if not splits:
                self.base += float(root.get("leaf_value", 0.0))
                continue
            root_count = splits[0].count
            expected = sum(leaf.value * leaf.count for leaf in leaves) / root_count
            tree = _Tree(splits=splits, leaves=leaves, expected=expected)
            tree.features = np.array(sorted({s.feature for s in splits}), dtype=np.int64)
            if len(splits) <= max_internal:
                patterns = np.arange(2 ** len(splits))
                bits = ((patterns[:, None] >> np.arange(len(splits))) & 1).astype(bool)
                tree.table = _tree_shap(tree, bits)
                tree.table_t = np.ascontiguousarray(tree.table.T)
            self.trees.append(tree)
            self.base += expected

    @staticmethod
    def matrix(X: pd.DataFrame) -> np.ndarray:
        """Float matrix as LightGBM sees a prepared frame (categories as codes, missing NaN)."""
        return TreeShapTables.feature_major(X).T

    @staticmethod
    def feature_major(X: pd.DataFrame) -> np.ndarray:
        """:meth:`matrix` transposed: (k, n), one contiguous row per feature."""
        out = np.empty((X.shape[1], len(X)))
        for j, name in enumerate(X.columns):
            values = X[name]
            if isinstance(values.dtype, pd.CategoricalDtype):
                codes = values.cat.codes.to_numpy()
                out[j] = codes
                out[j][codes < 0] = np.nan
            elif values.dtype == np.float64:
                out[j] = values.to_numpy()
            else:
                out[j] = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        return out

    def contributions(self, X: pd.DataFrame | np.ndarray, batch_rows: int = 16384) -> np.ndarray:
        """SHAP values in raw-margin space: (n, k + 1), last column the base value.

        Rows are processed in batches; contributions are accumulated feature-major so every
        table gather and add runs over contiguous memory.
        """
        data = X.T if isinstance(X, np.ndarray) else self.feature_major(X)
        n = data.shape[1]
        out = np.empty((n, self.n_features + 1))
        for start in range(0, n, batch_rows):
            chunk = np.ascontiguousarray(data[:, start : start + batch_rows])
            out[start : start + batch_rows] = self._batch(chunk).T
        return out

    def contributions_by_feature(
        self,
        data: np.ndarray,
        codes: dict[int, np.ndarray] | None = None,
        batch_rows: int = 16384,
    ) -> np.ndarray:
        """:meth:`contributions` of a feature-major block ``data`` (k, n), transposed: (k + 1, n).

        The same numbers as ``contributions(data.T).T``, one contiguous row per feature (the
        base value last), without transposing the rows twice: what-if builds its candidates
        feature-major and its explanation reads them feature by feature
        (:func:`~partnerscore.models.whatif.candidate_scores`). ``codes``: the block's value
        codes (:meth:`codes`) when the caller has them (what-if gathers its candidates' from
        their rows' and codes only the values it changed).
        """
        n = data.shape[1]
        if n <= batch_rows:
            return self._batch(np.ascontiguousarray(data), codes)
        out = np.empty((self.n_features + 1, n))
        for start in range(0, n, batch_rows):
            part = slice(start, start + batch_rows)
            chunk = np.ascontiguousarray(data[:, part])
            out[:, part] = self._batch(chunk, None if codes is None else _rows(codes, part))
        return out

    def codes(self, data: np.ndarray) -> dict[int, np.ndarray]:
        """Feature -> (n,) value codes of a feature-major block (k, n), as `_batch` uses them.

        A code depends on its own value only (what-if gathers them for its candidates).
        """
        return self._plan().codes(data)

    def code(self, feature: int, values: np.ndarray) -> np.ndarray | None:
        """The codes of ``values`` of one feature (None: no split reads it by code)."""
        return self._plan().code(feature, values)

    def _plan(self) -> _Plan:
        """How to evaluate every table tree's splits from per-feature codes (built once)."""
        plan = getattr(self, "plan_", None)
        if plan is None:
            plan = self.plan_ = _Plan.build(self.trees, self.n_features)
        return plan

    def _batch(self, cols: np.ndarray, codes: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """Contributions (k + 1, m) of a feature-major block of m rows (``codes``: its codes).

        Each feature's values are first mapped to small integer codes (the interval between
        the tree thresholds on it, or its category; missing its own code), so a tree's pattern
        number is a sum of one table lookup per feature it splits on: the same left/right
        decisions as :meth:`_Split.goes_left`, bit for bit. Contributions are added tree by tree
        in model order, as one gather and one add per (tree, feature).
        """
        m = cols.shape[1]
        acc = np.zeros((self.n_features + 1, m))
        plan = self._plan()
        codes = plan.codes(cols) if codes is None else codes
        pattern = np.empty(m, dtype=np.intp)
        for tree, steps in zip(self.trees, plan.trees, strict=True):
            if tree.table is None:
                bits = np.empty((m, len(tree.splits)), dtype=bool)
                for s, split in enumerate(tree.splits):
                    bits[:, s] = split.goes_left(cols[split.feature])
                acc[tree.features] += _tree_shap(tree, bits).T
                continue
            lookups, direct = steps
            pattern[:] = 0
            for feature, lookup in lookups:
                pattern += lookup[codes[feature]]
            for s, split in direct:  # zero-as-missing splits: decided on the raw values
                pattern += split.goes_left(cols[split.feature]).astype(np.intp) << s
            for row, feature in zip(tree.table_t, tree.features.tolist(), strict=True):
                acc[feature] += row[pattern]
        acc[-1] = self.base
        return acc


@dataclass
class _Plan:
    """Per-feature value codes and per-tree lookup tables from codes to pattern bits.

    Numerical feature with sorted distinct thresholds ``t_0 < ... < t_K-1``: code
    ``#{t_i < x}`` (0..K), so ``x <= t_k`` exactly when ``code <= k``; missing values get code
    K + 1, which each split maps the way it treats them (its default side for missing type
    ``NaN``; as 0.0 for ``None``). Categorical feature: the category number when it is one some
    split lists, else C (goes right, like missing). Splits of missing type ``Zero`` (rare: only
    with ``zero_as_missing``) are evaluated on the raw values.

    Attributes:
        thresholds: Feature -> sorted distinct thresholds (numerical features).
        categories: Feature -> C, one past the largest category any split lists.
        trees: Per tree: ([(feature, lookup table code -> pattern bits)], [(bit, split)]).
    """

    thresholds: dict[int, np.ndarray]
    categories: dict[int, int]
    trees: list[tuple[list[tuple[int, np.ndarray]], list[tuple[int, _Split]]]]

    @classmethod
    def build(cls, trees: list[_Tree], n_features: int) -> _Plan:
        thresholds: dict[int, set[float]] = {}
        categories: dict[int, int] = {}
        for tree in trees:
            if tree.table is None:
                continue
            for split in tree.splits:
                if split.categories is not None:
                    top = max(split.categories, default=-1) + 1
                    categories[split.feature] = max(categories.get(split.feature, 0), top)
                elif split.missing != "Zero":
                    thresholds.setdefault(split.feature, set()).add(split.threshold)
        sorted_thresholds = {f: np.array(sorted(t), dtype=float) for f, t in thresholds.items()}
        plan_trees = []
        for tree in trees:
            lookups: dict[int, np.ndarray] = {}
            direct: list[tuple[int, _Split]] = []
            if tree.table is not None:
                for s, split in enumerate(tree.splits):
                    f = split.feature
                    if split.categories is not None:
                        c = categories[f]
                        left = np.zeros(c + 1, dtype=bool)
                        left[[k for k in split.categories if 0 <= k < c]] = True
                    elif split.missing == "Zero":
                        direct.append((s, split))
                        continue
                    else:
                        t = sorted_thresholds[f]
                        k = int(np.searchsorted(t, split.threshold))
                        left = np.arange(len(t) + 2) <= k
                        left[-1] = (
                            split.default_left
                            if split.missing == "NaN"
                            else (split.threshold >= 0.0)  # NaN read as 0.0
                        )
                    table = lookups.setdefault(f, np.zeros(len(left), dtype=np.intp))
                    table += left.astype(np.intp) << s
            plan_trees.append((list(lookups.items()), direct))
        return cls(thresholds=sorted_thresholds, categories=categories, trees=plan_trees)

    def codes(self, cols: np.ndarray) -> dict[int, np.ndarray]:
        """Feature -> (m,) codes of a feature-major block."""
        out = {f: self.code(f, cols[f]) for f in self.thresholds}
        out.update({f: self.code(f, cols[f]) for f in self.categories})
        return out

    def code(self, f: int, x: np.ndarray) -> np.ndarray | None:
        """(m,) codes of values ``x`` of feature ``f`` (None: no split reads ``f`` by code)."""
        if f in self.categories:
            c = self.categories[f]
            ints = np.where(np.isnan(x), -1, x).astype(np.int64)  # as _Split.goes_left
            return np.where((ints >= 0) & (ints < c), ints, c).astype(np.intp)
        if f in self.thresholds:
            t = self.thresholds[f]
            code = np.searchsorted(t, x)
            nan = np.isnan(x)
            if nan.any():
                code[nan] = len(t) + 1
            return code
        return None


def _rows(codes: dict[int, np.ndarray], part: slice) -> dict[int, np.ndarray]:
    """The codes of a slice of a block's rows."""
    return {f: c[part] for f, c in codes.items()}
