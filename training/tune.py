"""Optuna tuning of a head over expanding time-based folds, with pruning."""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import log_loss

from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.training.metrics import normalized_gini

# Bounded on purpose: exact SHAP contributions on every scored row must stay cheap (their cost
# grows with trees x leaves x depth^2): see HeadParams and bench/bench_score.py.
SEARCH_SPACE = {
    "n_estimators": (50, 200),
    "learning_rate": (0.03, 0.2),
    "num_leaves": (4, 8),
    "max_depth": (2, 3),
    "min_child_samples": (20, 200),
    "subsample": (0.6, 1.0),
    "colsample_bytree": (0.5, 1.0),
    "reg_lambda": (1e-3, 10.0),
}


def suggest(trial: optuna.Trial) -> dict:
    """Parameters for one trial from the bounded search space."""
    s = SEARCH_SPACE
    return {
        "n_estimators": trial.suggest_int("n_estimators", *s["n_estimators"], step=10),
        "learning_rate": trial.suggest_float("learning_rate", *s["learning_rate"], log=True),
        "num_leaves": trial.suggest_int("num_leaves", *s["num_leaves"]),
        "max_depth": trial.suggest_int("max_depth", *s["max_depth"]),
        "min_child_samples": trial.suggest_int(
            "min_child_samples", *s["min_child_samples"], log=True
        ),
        "subsample": trial.suggest_float("subsample", *s["subsample"]),
        "colsample_bytree": trial.suggest_float("colsample_bytree", *s["colsample_bytree"]),
        "reg_lambda": trial.suggest_float("reg_lambda", *s["reg_lambda"], log=True),
    }


def fold_loss(head: str, params: dict, X: pd.DataFrame, y: np.ndarray, train, valid) -> float:
    """Validation loss of one fold (lower is better): 1 - normalized Gini, or log loss."""
    if head == "revenue":
        model = RevenueRegressor(**params).fit(X[train], y[train])
        return 1.0 - normalized_gini(y[valid], model.predict(X[valid]))
    model = EngagementClassifier(calibration="sigmoid", **params).fit(X[train], y[train])
    p = np.clip(model.predict_proba(X[valid])[:, 1], 1e-6, 1 - 1e-6)
    return float(log_loss(y[valid], p, labels=[0, 1]))


def tune_head(
    head: str,
    X: pd.DataFrame,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    base_params: dict,
    trials: int,
    seed: int,
    timeout: float | None = None,
) -> tuple[dict, optuna.Study | None]:
    """Search parameters for one head; the default parameters are always trial 0.

    Args:
        head: ``revenue`` or ``engagement``.
        X: Prepared training features.
        y: Labels.
        folds: (train mask, validation mask) pairs, by signing cohort.
        base_params: Default parameters (also fixed values such as n_jobs, random_state).
        trials: Number of trials (0: return the defaults without searching).
        seed: Sampler seed.
        timeout: Optional wall-clock cap in seconds.

    Returns:
        (best parameters, the study or None when trials == 0).
    """
    if trials <= 0:
        return dict(base_params), None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    folds = [(tr, va) for tr, va in folds if tr.any() and va.any() and len(np.unique(y[tr])) > 1]
    y = np.asarray(y)

    def objective(trial: optuna.Trial) -> float:
        params = {**base_params, **suggest(trial)}
        losses = []
        for step, (train, valid) in enumerate(folds):
            losses.append(fold_loss(head, params, X, y, train, valid))
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float(np.mean(losses))

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        study_name=f"partnerscore-{head}",
    )
    defaults = {k: base_params[k] for k in SEARCH_SPACE if k in base_params}
    study.enqueue_trial(defaults)
    study.optimize(objective, n_trials=trials, timeout=timeout, gc_after_trial=False)
    best = {**base_params, **study.best_params}
    return best, study
