"""The batch scoring job: every partner signed before as_of, scored, explained and recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from partnerscore.features.core import PartnerscoreError, frame_format, write_frame_atomic
from partnerscore.features.pipeline import build_scoring_frame
from partnerscore.features.validate import load_raw
from partnerscore.models.policy import smooth_and_guard
from partnerscore.models.pyfunc import load_partner_model, model_version_of, resolve_model_uri
from partnerscore.models.scoring import score_features
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory

MIN_SEGMENT = 5
REJECT_COLUMNS = ("partner_id", "as_of", "reason")


def peer_percentile(scores: pd.DataFrame) -> np.ndarray:
    """Percentile (0-100) of each score among peers in the same tier x partner_type.

    Segments with fewer than 5 scored partners fall back to the tier, then to everyone.
    """
    score = scores["score"]
    overall = score.rank(pct=True, method="average") * 100
    out = overall.copy()
    if "tier" in scores:
        by_tier = score.groupby(scores["tier"].astype(str)).rank(pct=True, method="average") * 100
        tier_n = scores.groupby(scores["tier"].astype(str))["score"].transform("size")
        out = by_tier.where(tier_n >= MIN_SEGMENT, out)
        if "partner_type" in scores:
            seg = scores["tier"].astype(str) + "|" + scores["partner_type"].astype(str)
            by_seg = score.groupby(seg).rank(pct=True, method="average") * 100
            seg_n = scores.groupby(seg)["score"].transform("size")
            out = by_seg.where(seg_n >= MIN_SEGMENT, out)
    return out.round(1).to_numpy()


def rejects_path(out: Path) -> Path:
    """Where the rejects of a scores file go: ``<stem>.rejects.csv`` beside it."""
    return out.with_name(f"{out.stem}.rejects.csv")


@dataclass
class ScoreResult:
    """Outcome of ``run_score``."""

    out: Path
    rejects: Path
    as_of: date
    model_uri: str
    model_version: str
    in_scope: int
    scored: int
    rejected: int
    out_of_scope: int
    partners_input: int
    guardrail_flags: int = 0
    seconds: float = 0.0
    tiers: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """Counts that add up, where things went, and the model used."""
        tiers = ", ".join(f"{k}: {v}" for k, v in sorted(self.tiers.items()))
        return "\n".join(
            [
                f"scored {self.scored:,} partners as of {self.as_of} with {self.model_uri} "
                f"(version {self.model_version or '-'}) in {self.seconds:.1f} s",
                f"  partners in input {self.partners_input:,} = scored {self.scored:,} + "
                f"rejected {self.rejected:,} + signed on/after as_of {self.out_of_scope:,}",
                f"  score tiers: {tiers}; guardrail flags: {self.guardrail_flags:,}",
                f"  wrote {self.out}",
                f"  rejects {self.rejects}",
            ]
        )


def run_score(
    raw_dir: str | Path, as_of: date, model: str, out: str | Path, config: AppConfig
) -> ScoreResult:
    """The ``partnerscore score`` job.

    Validates the raw tables (quarantine beside the output), builds features strictly before
    ``as_of`` for every partner signed before it, scores them with the registered model,
    adds peer percentiles, smoothing and guardrails from the score history, writes the scores
    file atomically (CSV or Parquet by suffix) and a rejects file, then records the run in the
    history store (re-running the same as_of replaces its rows).

    Args:
        raw_dir: Raw tables folder.
        as_of: Scoring date.
        model: Alias, version number or model URI.
        out: Scores file path.
        config: Application configuration (policy, paths; its hash is stamped on every row).

    Returns:
        Counts and paths.
    """
    started = time.perf_counter()
    out = Path(out)
    frame_format(out)
    cut = pd.Timestamp(as_of)
    raw = load_raw(Path(raw_dir), out.parent / "quarantine")
    partners_all = raw.tables["partners"]
    quarantined_partners = raw.quarantine.get("partners", pd.DataFrame())
    rejects = []
    if not quarantined_partners.empty:
        rejects.append(
            pd.DataFrame(
                {
                    "partner_id": quarantined_partners["partner_id"].astype(str).to_numpy(),
                    "as_of": cut,
                    "reason": "partner row quarantined: "
                    + quarantined_partners["reason"].astype(str).to_numpy(),
                }
            )
        )
    signed = pd.to_datetime(partners_all["signed_at"])
    out_of_scope = int((signed >= cut).sum())
    in_scope = int((signed < cut).sum())
    if in_scope == 0:
        raise PartnerscoreError(f"--as-of {as_of}: no partner signed before this date")

    features = build_scoring_frame(raw, cut)
    uri = resolve_model_uri(model, config.train.registered_model)
    mlflow.set_tracking_uri(config.paths.tracking_uri())
    mlflow.set_registry_uri(config.paths.tracking_uri())
    partner_model = load_partner_model(uri)
    try:
        version = model_version_of(uri)
    except mlflow.exceptions.MlflowException:
        version = ""
    partner_model.metadata["version"] = version

    scored = score_features(partner_model, features, policy=config.policy)
    finite = np.isfinite(scored["pred_revenue"]) & np.isfinite(scored["pred_engagement"])
    if not finite.all():
        bad = scored.loc[~finite, "partner_id"]
        rejects.append(
            pd.DataFrame(
                {"partner_id": bad.to_numpy(), "as_of": cut, "reason": "non-finite prediction"}
            )
        )
        scored = scored[finite].reset_index(drop=True)

    scored["peer_percentile"] = peer_percentile(scored)
    history = ScoreHistory(config.paths.history_database())
    previous = history.previous_scores(scored["partner_id"].tolist(), before=cut)
    smoothed, prev, flags = [], [], []
    for pid, value in zip(scored["partner_id"], scored["score"], strict=True):
        s, p, f = smooth_and_guard(float(value), previous.get(pid, []), config.policy)
        smoothed.append(s)
        prev.append(np.nan if p is None else p)
        flags.append(f)
    scored["score_previous"] = prev
    scored["score_smoothed"] = smoothed
    scored["guardrail_flag"] = flags
    scored["config_hash"] = config.hash()
    scored["model_uri"] = uri
    scored = scored.sort_values("partner_id", kind="stable").reset_index(drop=True)

    reject_frame = (
        pd.concat(rejects, ignore_index=True)
        if rejects
        else pd.DataFrame(columns=list(REJECT_COLUMNS))
    )
    write_frame_atomic(scored, out)
    write_frame_atomic(reject_frame, rejects_path(out))
    history.upsert(scored)
    return ScoreResult(
        out=out,
        rejects=rejects_path(out),
        as_of=as_of,
        model_uri=uri,
        model_version=version,
        in_scope=in_scope,
        scored=len(scored),
        rejected=len(reject_frame),
        out_of_scope=out_of_scope,
        partners_input=len(partners_all) + len(quarantined_partners),
        guardrail_flags=int(np.sum(flags)),
        seconds=time.perf_counter() - started,
        tiers=scored["score_tier"].value_counts().to_dict(),
    )
