"""Per-row scoring: predictions, output-scale SHAP drivers, subscores and the scoring policy.

:func:`score_features` is what the registered MLflow pyfunc returns, and what the batch job
builds on. It is deterministic and vectorised: contributions are computed once per head and the
predictions are derived from them (so drivers and predictions can never disagree).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from partnerscore.features.registry import LAYERS
from partnerscore.models import explain
from partnerscore.models import policy as pol
from partnerscore.models.bundle import PartnerModel
from partnerscore.models.config import PolicyConfig

PASSTHROUGH = ("partner_name", "signed_at", "tier", "region", "industry", "partner_type")


def _drivers(
    model: PartnerModel,
    features: pd.DataFrame,
    score_contrib: np.ndarray,
    top: int,
) -> dict[str, np.ndarray]:
    """Top positive and negative driver sentences per row, ranked by effect on the score.

    Drivers moving the score by less than 0.05 points are left empty. Sentences are built per
    (slot, feature) group with value labels cached, so the cost is a few string joins per row.
    """
    n, k = score_contrib.shape
    specs = model.feature_specs
    m = min(top, k)
    rows = np.arange(n)
    out: dict[str, np.ndarray] = {}
    ranked = {
        "pos": np.argsort(-score_contrib, axis=1, kind="stable")[:, :m],
        "neg": np.argsort(score_contrib, axis=1, kind="stable")[:, :m],
    }
    for sign, order in ranked.items():
        for j in range(top):
            col = np.full(n, "", dtype=object)
            out[f"driver_{sign}_{j + 1}"] = col
            if j >= m:
                continue
            idx = order[:, j]
            pts = score_contrib[rows, idx]
            keep = pts > 0.05 if sign == "pos" else pts < -0.05
            for f in np.unique(idx[keep]):
                sel = np.flatnonzero(keep & (idx == f))
                spec = specs[f]
                values = (
                    features[spec.name].to_numpy()[sel]
                    if spec.name in features
                    else np.full(len(sel), np.nan)
                )
                col[sel] = explain.driver_sentences(spec, values, pts[sel])
    return out


def score_features(
    model: PartnerModel,
    features: pd.DataFrame,
    policy: PolicyConfig | None = None,
    num_threads: int | None = None,
) -> pd.DataFrame:
    """Score a feature frame: one output row per input row, in input order.

    Args:
        model: The PartnerModel.
        features: partner_id, as_of and feature columns (plain dtypes are fine); optional
            passthrough columns partner_name, signed_at, tier, region, industry, partner_type.
        policy: Scoring policy (default: the one bundled with the model).
        num_threads: Threads for SHAP contributions (default: the heads' n_jobs).

    Returns:
        The score rows (see the score-row contract in the README).
    """
    policy = policy or model.policy
    features = features.reset_index(drop=True)
    n = len(features)
    specs = model.feature_specs
    raw = model.raw_contributions(features, num_threads=num_threads)
    r_contrib, r_base = raw["revenue"]
    e_contrib, e_base = raw["engagement"]
    pred_revenue = np.exp(r_base + r_contrib.sum(axis=1))
    r_base_out = np.exp(r_base)
    pred_engagement = model.engagement.calibrate(e_base + e_contrib.sum(axis=1))
    e_base_out = model.engagement.calibrate(e_base)
    rev_out = explain.to_output_scale(r_contrib, pred_revenue, r_base_out)
    eng_out = explain.to_output_scale(e_contrib, pred_engagement, e_base_out)

    score, score_rev, score_eng = pol.composite_score(
        pred_revenue, pred_engagement, model.reference, policy
    )
    base_score, base_rev, base_eng = pol.composite_score(
        r_base_out, e_base_out, model.reference, policy
    )
    # score points per feature: each head's score gap shared like its output contributions
    score_contrib = explain.to_output_scale(rev_out, score_rev, base_rev) + explain.to_output_scale(
        eng_out, score_eng, base_eng
    )
    age = (
        pd.to_numeric(features["age_days"], errors="coerce").to_numpy(float)
        if "age_days" in features
        else np.full(n, np.nan)
    )
    quads = pol.quadrant(pred_revenue, pred_engagement, model.reference, policy)
    provisional = pol.is_provisional(age, policy)
    q_label, title, detail = pol.interventions(quads, provisional, policy)

    cols: dict[str, object] = {
        "partner_id": features["partner_id"].astype(str).to_numpy(),
        "as_of": pd.to_datetime(features["as_of"]).to_numpy(),
        "age_days": age,
    }
    for name in PASSTHROUGH:
        if name in features:
            cols[name] = features[name].to_numpy()
    cols.update(
        {
            "pred_revenue": pred_revenue,
            "pred_engagement": pred_engagement,
            "score": score,
            "score_tier": pol.score_tier(score, policy),
            "quadrant": quads,
            "quadrant_label": q_label,
            "intervention": title,
            "intervention_detail": detail,
            "score_base": base_score,
        }
    )
    for head, out, base in (("revenue", rev_out, r_base_out), ("engagement", eng_out, e_base_out)):
        cols[f"{head}_base"] = base
        for layer, values in explain.layer_subscores(out, specs).items():
            cols[f"{head}_{layer}"] = values
    for layer in LAYERS:
        cols[f"score_{layer}"] = score_contrib[:, [s.layer == layer for s in specs]].sum(axis=1)
    cols.update(_drivers(model, features, score_contrib, policy.top_drivers))
    cols["provisional"] = provisional
    cols["model_version"] = str(model.metadata.get("version", ""))
    cols["model_config_hash"] = str(model.metadata.get("config_hash", ""))
    frame = pd.DataFrame(cols)
    shap_cols = {}
    for j, spec in enumerate(specs):
        shap_cols[f"shap_revenue_{spec.name}"] = rev_out[:, j]
        shap_cols[f"shap_engagement_{spec.name}"] = eng_out[:, j]
    values = {
        s.name: (features[s.name].to_numpy() if s.name in features else np.full(n, np.nan))
        for s in specs
        if s.name not in frame.columns
    }
    return pd.concat([frame, pd.DataFrame(values), pd.DataFrame(shap_cols)], axis=1)
