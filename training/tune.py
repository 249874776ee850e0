"""Optuna tuning of each head on its own search, over expanding time-based folds.

Each head has its own search space and its own sampler seed (so two heads never get the same
candidates), and every fold is fitted with early stopping on its validation cohorts: the number
of trees is not searched but learnt — the trial's ``n_estimators`` is the mean best iteration
over its folds (a user attribute of the trial), capped by :data:`MAX_TREES`.

Losses (lower is better), both proper scoring rules, so scale errors count, not only ranking:
revenue — mean tweedie deviance (power :data:`~partnerscore.training.metrics.TWEEDIE_POWER`,
fixed whatever variance power a trial trains with, so trials are comparable); engagement — log
loss after a Platt map fitted on the training folds' margins.
"""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import log_loss, mean_tweedie_deviance

from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.training import progress
from partnerscore.training.metrics import TWEEDIE_POWER

# Trees stay within depth 3 / 8 leaves (7 splits): every tree compiles to a SHAP lookup table
# (models/treeshap.py, <= 10 splits), so scoring with drivers stays fast; its cost then grows
# linearly with the number of trees, capped here (see bench/bench_score.py).
MAX_TREES = 300
EARLY_STOPPING_ROUNDS = 25
COMMON_SPACE = {
    "learning_rate": (0.03, 0.25),
    "num_leaves": (4, 8),
    "max_depth": (2, 3),
    "subsample": (0.6, 1.0),
    "colsample_bytree": (0.5, 1.0),
    "reg_lambda": (1e-3, 30.0),
    "reg_alpha": (1e-3, 10.0),
}
SEARCH_SPACES = {
    "revenue": {
        **COMMON_SPACE,
        "min_child_samples": (20, 400),
        "tweedie_variance_power": (1.05, 1.7),
    },
    "engagement": {**COMMON_SPACE, "min_child_samples": (10, 300)},
}
SEED_OFFSET = {"revenue": 0, "engagement": 1009}


def suggest(trial: optuna.Trial, head: str = "revenue") -> dict:
    """Parameters for one trial from the head's bounded search space."""
    s = SEARCH_SPACES[head]
    params = {
        "learning_rate": trial.suggest_float("learning_rate", *s["learning_rate"], log=True),
        "num_leaves": trial.suggest_int("num_leaves", *s["num_leaves"]),
        "max_depth": trial.suggest_int("max_depth", *s["max_depth"]),
        "min_child_samples": trial.suggest_int(
            "min_child_samples", *s["min_child_samples"], log=True
        ),
        "subsample": trial.suggest_float("subsample", *s["subsample"]),
        "colsample_bytree": trial.suggest_float("colsample_bytree", *s["colsample_bytree"]),
        "reg_lambda": trial.suggest_float("reg_lambda", *s["reg_lambda"], log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", *s["reg_alpha"], log=True),
    }
    if "tweedie_variance_power" in s:
        params["tweedie_variance_power"] = trial.suggest_float(
            "tweedie_variance_power", *s["tweedie_variance_power"]
        )
    return params


def fold_loss(
    head: str,
    params: dict,
    X: pd.DataFrame,
    y: np.ndarray,
    train,
    valid,
    engagement_head: dict | None = None,
    calib=None,
) -> tuple[float, int]:
    """(validation loss, best iteration) of one fold, fitted with early stopping.

    Engagement: by default a Platt map on the fold's training margins. ``engagement_head``
    (``EngagementClassifier`` keyword arguments, e.g. ``segment_columns`` and ``calibration``)
    and ``calib`` (a row mask inside ``train``: the map's rows, the booster then fits the rest)
    score the fold as the final head is fitted instead (no refit: the fold's booster stops
    early on ``valid``).
    """
    params = {**params, "n_estimators": MAX_TREES}
    if head == "revenue":
        model = RevenueRegressor(**params).fit(
            X[train], y[train], X[valid], y[valid], early_stopping_rounds=EARLY_STOPPING_ROUNDS
        )
        pred = np.maximum(model.predict(X[valid]), 1e-9)
        loss = float(mean_tweedie_deviance(y[valid], pred, power=TWEEDIE_POWER))
        return loss, model.best_iteration_
    kwargs = {"calibration": "sigmoid", **(engagement_head or {}), "refit": False}
    fit_rows = train if calib is None else train & ~calib
    model = EngagementClassifier(**kwargs, **params).fit(
        X[fit_rows],
        y[fit_rows],
        None if calib is None else X[calib],
        None if calib is None else y[calib],
        X_valid=X[valid],
        y_valid=y[valid],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
    )
    p = np.clip(model.predict_proba(X[valid])[:, 1], 1e-6, 1 - 1e-6)
    return float(log_loss(y[valid], p, labels=[0, 1])), model.best_iteration_


def tune_head(
    head: str,
    X: pd.DataFrame,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    base_params: dict,
    trials: int,
    seed: int,
    timeout: float | None = None,
    engagement_head: dict | None = None,
    calib_masks: list[np.ndarray] | None = None,
) -> tuple[dict, optuna.Study | None]:
    """Search parameters for one head; the default parameters are always trial 0.

    Args:
        head: ``revenue`` or ``engagement``.
        X: Prepared training features.
        y: Labels.
        folds: (train mask, validation mask) pairs, by signing cohort.
        base_params: Default parameters (also fixed values such as n_jobs, random_state).
        trials: Number of trials (0: return the defaults without searching).
        seed: Base seed; the head's sampler uses ``seed + SEED_OFFSET[head]``.
        timeout: Optional wall-clock cap in seconds.
        engagement_head: Engagement fold models' ``EngagementClassifier`` arguments
            (:func:`fold_loss`; default: a Platt map on the training margins, no offsets).
        calib_masks: Per fold, the rows of its training mask the engagement map is fitted on.

    Returns:
        (best parameters with ``n_estimators`` from early stopping, the study or None when
        trials == 0).
    """
    if head not in SEARCH_SPACES:
        raise ValueError(f"unknown head '{head}'")
    if trials <= 0:
        return dict(base_params), None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    y = np.asarray(y)
    calibs = list(calib_masks) if calib_masks is not None else [None] * len(folds)
    folds = [
        (tr, va, ca)
        for (tr, va), ca in zip(folds, calibs, strict=True)
        if tr.any() and va.any() and len(np.unique(y[tr])) > 1
    ]
    if head == "engagement":
        folds = [(tr, va, ca) for tr, va, ca in folds if len(np.unique(y[va])) > 1]
    if not folds:
        return dict(base_params), None

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **suggest(trial, head)}
        losses, iterations = [], []
        for step, (train, valid, calib) in enumerate(folds):
            loss, best = fold_loss(head, params, X, y, train, valid, engagement_head, calib)
            losses.append(loss)
            iterations.append(best)
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("n_estimators", int(np.clip(np.mean(iterations), 10, MAX_TREES)))
        return float(np.mean(losses))

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed + SEED_OFFSET[head]),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        study_name=f"partnerscore-{head}",
    )
    space = SEARCH_SPACES[head]
    defaults = {k: base_params[k] for k in space if k in base_params}
    defaults = {
        k: float(np.clip(v, *space[k])) if isinstance(v, float) else int(np.clip(v, *space[k]))
        for k, v in defaults.items()
    }
    study.enqueue_trial(defaults)
    with progress.task(f"tuning {head} head", total=trials) as bar:
        study.optimize(
            objective,
            n_trials=trials,
            timeout=timeout,
            gc_after_trial=False,
            callbacks=[lambda _study, _trial: bar.advance()],
        )
    best = {
        **base_params,
        **study.best_params,
        "n_estimators": study.best_trial.user_attrs["n_estimators"],
    }
    return best, study
