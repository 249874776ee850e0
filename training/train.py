"""The training job: tune, fit both heads and the baselines, evaluate, track and register."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError, file_fingerprint
from partnerscore.features.registry import feature_specs, get_spec, registry_version
from partnerscore.models.baselines import (
    BASELINES,
    LayeredScorecard,
    LinearBaseline,
    NaiveExtrapolation,
)
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.config import PolicyConfig
from partnerscore.models.heads import EngagementClassifier, RevenueRegressor
from partnerscore.models.pyfunc import log_partner_model
from partnerscore.training import tracking
from partnerscore.training.config import TrainConfig
from partnerscore.training.metrics import evaluate, oracle_ratios, segment_metrics
from partnerscore.training.reference import REFERENCE_ARTIFACT, reference_profile
from partnerscore.training.splits import holdout_split, newest_partners_mask, time_folds
from partnerscore.training.tune import tune_head

CHALLENGER = "challenger"
CHAMPION = "champion"
HOLDOUT_ARTIFACT = "evaluation/holdout.parquet"
_REQUIRED = ("partner_id", "as_of", "signed_at", "label_revenue", "label_engaged", "age_days")


@dataclass
class TrainResult:
    """Outcome of ``run_train``."""

    run_id: str
    version: str | None
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    params: dict[str, dict]
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tracking_uri: str = ""

    def summary(self) -> str:
        """Holdout comparison of the GBM heads with the baselines and where it is logged."""
        keys = [
            ("revenue_normalized_gini", "rev gini"),
            ("revenue_spearman", "rev spearman"),
            ("revenue_top_decile_capture", "top10% cap"),
            ("revenue_portfolio_bias", "rev bias"),
            ("engagement_roc_auc", "eng AUC"),
            ("engagement_brier", "eng brier"),
            ("engagement_ece", "eng ECE"),
        ]
        head = f"{'model':<12}" + "".join(f"{label:>13}" for _, label in keys)
        lines = [
            f"trained on {self.rows.get('train', 0):,} snapshots, holdout "
            f"{self.rows.get('holdout', 0):,} (newest signing cohorts) in {self.seconds:.1f} s",
            head,
        ]
        rows = {"gbm": self.metrics, **self.baselines}
        for name, m in rows.items():
            lines.append(
                f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>13.3f}" for k, _ in keys)
            )
        if "oracle_ratio_primary_score" in self.metrics:
            m = self.metrics
            lines.append(
                "oracle ratio (simulated truth): revenue gini "
                f"{m.get('oracle_ratio_revenue_normalized_gini', float('nan')):.2f}, "
                f"engagement AUC {m.get('oracle_ratio_engagement_roc_auc', float('nan')):.2f}"
            )
        lines.append(f"MLflow run {self.run_id} at {self.tracking_uri}")
        if self.version:
            lines.append(f"registered version {self.version} with alias '{CHALLENGER}'")
        return "\n".join(lines)


def load_training_set(features_dir: str | Path) -> tuple[pd.DataFrame, dict, pd.DataFrame | None]:
    """Read training_set.parquet, manifest.json and (if present) truth.parquet.

    Raises:
        PartnerscoreError: Missing files or columns, or no usable rows.
    """
    features_dir = Path(features_dir)
    path = features_dir / "training_set.parquet"
    if not path.exists():
        raise PartnerscoreError(f"{path}: not found (run `partnerscore build` first)")
    frame = pd.read_parquet(path)
    for col in _REQUIRED:
        if col not in frame.columns:
            raise PartnerscoreError(f"{path}: missing column '{col}'")
    manifest_path = features_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest["training_set_sha256"] = file_fingerprint(path)
    truth_path = features_dir / "truth.parquet"
    truth = pd.read_parquet(truth_path) if truth_path.exists() else None
    if len(frame) < 50 or frame["partner_id"].nunique() < 20:
        raise PartnerscoreError(f"{path}: only {len(frame)} rows; need at least 50 to train")
    return frame, manifest, truth


def _specs_for(frame: pd.DataFrame, manifest: dict) -> list:
    names = manifest.get("feature_names")
    if names:
        specs = [get_spec(n) for n in names]
        if any(s is None for s in specs):
            unknown = [n for n, s in zip(names, specs, strict=True) if s is None][0]
            raise PartnerscoreError(
                f"manifest.json: feature '{unknown}' is not in this version's registry "
                "(rebuild the training set)"
            )
        return specs
    return [s for s in feature_specs() if s.name in frame.columns]


def _head_kwargs(params, seed: int) -> dict:
    values = params.model_dump() if hasattr(params, "model_dump") else dict(params)
    values["random_state"] = seed
    return values


def monotone_constraints(specs: list) -> tuple[int, ...]:
    """Per-feature monotone constraint from the declared direction (categoricals free)."""
    sign = {"higher_is_better": 1, "lower_is_better": -1}
    return tuple(sign.get(s.direction, 0) if s.kind == "numeric" else 0 for s in specs)


def _loggable(params: dict) -> dict:
    """Head parameters as MLflow params (the per-feature constraint vector summarised)."""
    out = {k: v for k, v in params.items() if k != "monotone_constraints"}
    mono = params.get("monotone_constraints")
    out["monotone_features"] = sum(1 for m in mono if m) if mono else 0
    return out


def fit_partner_model(
    train: pd.DataFrame,
    specs: list,
    config: TrainConfig,
    policy: PolicyConfig,
    revenue_params: dict,
    engagement_params: dict,
) -> PartnerModel:
    """Fit both heads on a training frame (engagement calibrated on its newest cohorts).

    Monotone constraints from the feature directions are added when ``config.monotone`` and
    the parameters do not set them already.
    """
    if config.monotone:
        mono = monotone_constraints(specs)
        revenue_params = {"monotone_constraints": mono, **revenue_params}
        engagement_params = {"monotone_constraints": mono, **engagement_params}
    categories = PartnerModel.categories_from(train, specs)
    empty = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=categories,
        policy=policy,
    )
    X = empty.prepare(train)
    revenue = RevenueRegressor(**revenue_params).fit(X, train["label_revenue"].to_numpy())
    calib = newest_partners_mask(train, config.calibration_share)
    y_eng = train["label_engaged"].to_numpy()
    engagement = EngagementClassifier(
        calibration=config.calibration, refit=config.engagement_refit, **engagement_params
    ).fit(X[~calib], y_eng[~calib], X[calib], y_eng[calib])
    model = PartnerModel(
        revenue=revenue,
        engagement=engagement,
        feature_specs=specs,
        categories=categories,
        policy=policy,
    )
    model.set_reference(train)
    return model


def _log_frame(frame: pd.DataFrame, artifact_path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_path).name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_path).parent))


def _log_plots(model: PartnerModel, holdout: pd.DataFrame, preds: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        X = model.prepare(holdout)
        sample = X.sample(min(len(X), 2000), random_state=0)
        paths = [
            tracking.plot_importance(
                model.revenue.feature_importance(),
                "Revenue head: importance (gain)",
                tmp / "importance_revenue.png",
            ),
            tracking.plot_importance(
                model.engagement.feature_importance(),
                "Engagement head: importance (gain)",
                tmp / "importance_engagement.png",
            ),
            tracking.plot_shap_summary(
                model.revenue.raw_contributions(sample)[:, :-1],
                sample,
                "Revenue head: SHAP (log scale)",
                tmp / "shap_summary_revenue.png",
            ),
            tracking.plot_shap_summary(
                model.engagement.raw_contributions(sample)[:, :-1],
                sample,
                "Engagement head: SHAP (logit)",
                tmp / "shap_summary_engagement.png",
            ),
            tracking.plot_calibration(
                holdout["label_engaged"], preds["pred_engagement"], tmp / "calibration.png"
            ),
            tracking.plot_lift(holdout["label_revenue"], preds["pred_revenue"], tmp / "lift.png"),
        ]
        for path in paths:
            mlflow.log_artifact(str(path), artifact_path="plots")


def run_train(
    features_dir: str | Path,
    config: TrainConfig,
    *,
    policy: PolicyConfig | None = None,
    tracking_uri: str,
    artifact_root: str | None = None,
    config_hash: str = "",
) -> TrainResult:
    """The ``partnerscore train`` job.

    Splits by signing cohort (holdout = newest), tunes each head with Optuna on expanding time
    folds of the training cohorts, fits both heads and the baselines, evaluates everything on
    the holdout, logs to MLflow and registers a new version with alias ``challenger``. The
    registered model is the one evaluated (not refitted on the holdout), so its logged metrics
    are exactly what it achieved on partners it never saw.

    Args:
        features_dir: Folder written by ``partnerscore build``.
        config: Training settings.
        policy: Scoring policy bundled with the model.
        tracking_uri: MLflow tracking (and registry) URI.
        artifact_root: Artifact root for a new experiment on a local store.
        config_hash: Hash of the application config, logged as tag and param.

    Returns:
        Run id, registered version and holdout metrics.
    """
    started = time.perf_counter()
    policy = policy or PolicyConfig()
    frame, manifest, truth = load_training_set(features_dir)
    specs = _specs_for(frame, manifest)
    frame = frame.sort_values(["partner_id", "as_of"], kind="stable").reset_index(drop=True)
    train_mask, hold_mask = holdout_split(frame, config.holdout_share)
    train, holdout = (
        frame[train_mask].reset_index(drop=True),
        frame[hold_mask].reset_index(drop=True),
    )
    if train["label_engaged"].nunique() < 2 or holdout.empty:
        raise PartnerscoreError("training set has a single engagement class or no holdout rows")

    # tuning on expanding time folds inside the training cohorts
    base_rev = _head_kwargs(config.revenue, config.seed)
    base_eng = _head_kwargs(config.engagement, config.seed)
    if config.monotone:
        base_rev["monotone_constraints"] = base_eng["monotone_constraints"] = monotone_constraints(
            specs
        )
    probe = PartnerModel(
        revenue=RevenueRegressor(),
        engagement=EngagementClassifier(),
        feature_specs=specs,
        categories=PartnerModel.categories_from(train, specs),
        policy=policy,
    )
    X_train = probe.prepare(train)
    folds = time_folds(train, config.folds)
    rev_params, rev_study = tune_head(
        "revenue",
        X_train,
        train["label_revenue"].to_numpy(),
        folds,
        base_rev,
        config.trials,
        config.seed,
        config.timeout_seconds,
    )
    eng_params, eng_study = tune_head(
        "engagement",
        X_train,
        train["label_engaged"].to_numpy(),
        folds,
        base_eng,
        config.trials,
        config.seed,
        config.timeout_seconds,
    )
    model = fit_partner_model(train, specs, config, policy, rev_params, eng_params)
    preds = model.predict(holdout)
    metrics = evaluate(holdout, preds["pred_revenue"], preds["pred_engagement"])
    if truth is not None:
        metrics.update(oracle_ratios(metrics, holdout, truth))

    baselines: dict[str, dict[str, float]] = {}
    for name, cls in BASELINES.items():
        if cls is NaiveExtrapolation:
            est = cls(horizon_days=int(manifest.get("build_config", {}).get("horizon_days", 180)))
        elif cls in (LayeredScorecard, LinearBaseline):
            est = cls(specs)
        est.fit(train, train["label_revenue"].to_numpy(), train["label_engaged"].to_numpy())
        b_rev, b_eng = est.predict(holdout)
        baselines[name] = evaluate(holdout, b_rev, b_eng)

    segments = segment_metrics(holdout, preds["pred_revenue"], preds["pred_engagement"])
    trained_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    model.metadata = {
        "config_hash": config_hash,
        "registry_version": registry_version(),
        "trained_at": trained_at,
        "training_rows": len(train),
        "holdout_rows": len(holdout),
        "training_set_sha256": manifest.get("training_set_sha256", ""),
        "horizon_days": manifest.get("build_config", {}).get("horizon_days"),
        "holdout_metrics": metrics,
    }

    tracking.setup_tracking(tracking_uri, config.experiment, artifact_root)
    with mlflow.start_run(run_name=f"train-{trained_at}") as run:
        mlflow.set_tags(
            {
                "config_hash": config_hash,
                "registry_version": registry_version(),
                "training_set_sha256": manifest.get("training_set_sha256", ""),
                "partnerscore.job": "train",
            }
        )
        mlflow.log_params(
            {
                "config_hash": config_hash,
                "trials": config.trials,
                "holdout_share": config.holdout_share,
                "calibration_share": config.calibration_share,
                "folds": config.folds,
                "features": len(specs),
                "train_rows": len(train),
                "holdout_rows": len(holdout),
                "calibration": model.engagement.calibration_method_,
                "engagement_refit": model.engagement.refitted_,
                "monotone": config.monotone,
                "seed": config.seed,
                "promotion_margin": config.promotion_margin,
                **{f"revenue_{k}": v for k, v in _loggable(rev_params).items()},
                **{f"engagement_{k}": v for k, v in _loggable(eng_params).items()},
            }
        )
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items() if np.isfinite(v)})
        for name, m in baselines.items():
            mlflow.log_metrics({f"baseline_{name}_{k}": v for k, v in m.items() if np.isfinite(v)})
        for head, study in (("revenue", rev_study), ("engagement", eng_study)):
            if study is not None:
                mlflow.log_metric(f"tuning_{head}_best_loss", study.best_value)
                _log_frame(study.trials_dataframe(), f"tuning/{head}_trials.csv")
        mlflow.log_dict(manifest, "training/manifest.json")
        mlflow.log_dict(reference_profile(model, frame, manifest), REFERENCE_ARTIFACT)
        mlflow.log_dict(
            {"features": [s.model_dump() for s in specs]}, "training/feature_specs.json"
        )
        if not segments.empty:
            _log_frame(segments, "evaluation/segment_metrics.csv")
        _log_frame(holdout, HOLDOUT_ARTIFACT)
        _log_plots(model, holdout, preds)
        info = log_partner_model(model, config.registered_model, input_example=holdout)
        run_id = run.info.run_id
    version = str(info.registered_model_version) if info.registered_model_version else None
    if version:
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(config.registered_model, CHALLENGER, version)
        for key in ("revenue_normalized_gini", "engagement_roc_auc", "primary_score"):
            client.set_model_version_tag(
                config.registered_model, version, f"holdout_{key}", f"{metrics[key]:.4f}"
            )
        client.set_model_version_tag(config.registered_model, version, "config_hash", config_hash)
    return TrainResult(
        run_id=run_id,
        version=version,
        metrics=metrics,
        baselines=baselines,
        params={"revenue": rev_params, "engagement": eng_params},
        rows={"train": len(train), "holdout": len(holdout)},
        seconds=time.perf_counter() - started,
        tracking_uri=tracking_uri,
    )
