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
from partnerscore.models.policy import smooth_and_guard_batch
from partnerscore.models.pyfunc import load_partner_model, model_version_of, resolve_model_uri
from partnerscore.models.scoring import score_features
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.monitor import flag_anomalies

MIN_SEGMENT = 5
REJECT_COLUMNS = ("partner_id", "as_of", "reason")


def peer_percentile(scores: pd.DataFrame) -> np.ndarray:
    """Percentile (0-100) of each score among the partner's peers in this run.

    Peers are the partner's segment, tier x partner_type. A segment with fewer than
    :data:`MIN_SEGMENT` (5) scored partners is too small to compare against, so those partners
    are compared within their tier instead, and within everyone scored when the tier is small
    too. Ties share the average rank (``rank(pct=True)``); rounded to 0.1.
    """
    score = scores["score"]
    overall = score.rank(pct=True, method="average") * 100
    out = overall.copy()
    if "tier" in scores:
        tier = scores["tier"].astype(str)
        by_tier = score.groupby(tier).rank(pct=True, method="average") * 100
        tier_n = score.groupby(tier).transform("size")
        out = by_tier.where(tier_n >= MIN_SEGMENT, out)
        if "partner_type" in scores:
            seg = tier + "|" + scores["partner_type"].astype(str)
            by_seg = score.groupby(seg).rank(pct=True, method="average") * 100
            seg_n = score.groupby(seg).transform("size")
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
    provisional: int = 0
    seconds: float = 0.0
    tiers: dict[str, int] = field(default_factory=dict)
    quarantined_rows: dict[str, int] = field(default_factory=dict)
    quarantine_dir: Path | None = None

    def summary(self) -> str:
        """Counts that add up, where things went, and the model used."""
        tiers = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.tiers.items()))
        lines = [
            f"scored {self.scored:,} partners as of {self.as_of} with {self.model_uri} "
            f"(version {self.model_version or '-'}) in {self.seconds:.1f} s",
            f"  partners in input {self.partners_input:,} = scored {self.scored:,} + "
            f"rejected {self.rejected:,} + signed on/after as_of {self.out_of_scope:,}",
            f"  score tiers: {tiers}; provisional: {self.provisional:,}; "
            f"guardrail flags: {self.guardrail_flags:,}",
        ]
        if self.quarantined_rows:
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantined_rows.items()))
            lines.append(
                f"  quarantined rows (scored without them): {counts} -> {self.quarantine_dir}"
            )
        lines += [f"  wrote {self.out}", f"  rejects {self.rejects}"]
        return "\n".join(lines)


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
    uri = resolve_model_uri(model, config.train.registered_model)
    mlflow.set_tracking_uri(config.paths.tracking_uri())
    mlflow.set_registry_uri(config.paths.tracking_uri())
    partner_model = load_partner_model(uri)
    try:
        version = model_version_of(uri)
    except mlflow.exceptions.MlflowException:
        version = ""
    partner_model.metadata["version"] = version

    raw = load_raw(Path(raw_dir), out.parent / "quarantine")
    partners_all = raw.tables["partners"]
    quarantined = raw.quarantine.get("partners", pd.DataFrame(columns=["partner_id", "reason"]))
    rejects = [
        _rejects(
            quarantined["partner_id"],
            cut,
            "partner row quarantined: " + quarantined["reason"].astype(str),
        )
    ]
    signed = pd.to_datetime(partners_all["signed_at"])
    in_scope_ids = partners_all.loc[signed < cut, "partner_id"].astype(str)
    out_of_scope = int((signed >= cut).sum())
    if in_scope_ids.empty:
        raise PartnerscoreError(f"--as-of {as_of}: no partner signed before this date")

    features = build_scoring_frame(raw, cut)
    scored = score_features(partner_model, features, policy=config.policy)
    finite = np.isfinite(scored["pred_revenue"]) & np.isfinite(scored["pred_engagement"])
    rejects.append(_rejects(scored.loc[~finite, "partner_id"], cut, "non-finite prediction"))
    scored = scored[finite.to_numpy()].reset_index(drop=True)
    lost = ~in_scope_ids.isin(scored["partner_id"]) & ~in_scope_ids.isin(
        pd.concat([r["partner_id"] for r in rejects])
    )
    rejects.append(_rejects(in_scope_ids[lost], cut, "features could not be computed"))

    scored = scored.sort_values("partner_id", kind="stable").reset_index(drop=True)
    scored["peer_percentile"] = peer_percentile(scored)
    history = ScoreHistory(config.paths.history_database())
    previous = history.previous(scored["partner_id"].tolist(), before=cut)
    smoothed, prev, flags = smooth_and_guard_batch(
        scored["partner_id"].tolist(), scored["score"].to_numpy(), previous, config.policy
    )
    scored["score_previous"] = prev
    scored["score_smoothed"] = smoothed
    scored["guardrail_flag"] = flags
    scored["config_hash"] = config.hash()
    scored["model_uri"] = uri
    scored = flag_anomalies(scored, raw, cut, uri, config)

    reject_frame = pd.concat(rejects, ignore_index=True)
    reject_frame = reject_frame.sort_values(["partner_id", "reason"], kind="stable")
    write_frame_atomic(scored, out)
    write_frame_atomic(reject_frame.reset_index(drop=True), rejects_path(out))
    history.upsert(scored)
    quarantined_rows = {
        name: len(frame)
        for name, frame in raw.quarantine.items()
        if name != "partners" and len(frame)
    }
    return ScoreResult(
        out=out,
        rejects=rejects_path(out),
        as_of=as_of,
        model_uri=uri,
        model_version=version,
        in_scope=len(in_scope_ids),
        scored=len(scored),
        rejected=len(reject_frame),
        out_of_scope=out_of_scope,
        partners_input=len(partners_all) + len(quarantined),
        guardrail_flags=int(np.sum(flags)),
        provisional=int(scored["provisional"].sum()),
        seconds=time.perf_counter() - started,
        tiers=scored["score_tier"].value_counts().to_dict(),
        quarantined_rows=quarantined_rows,
        quarantine_dir=out.parent / "quarantine",
    )


def _rejects(partner_ids, as_of: pd.Timestamp, reason) -> pd.DataFrame:
    """Reject rows: partner_id (text; empty when the row had none), as_of and reason."""
    ids = pd.Series(partner_ids, dtype=object).reset_index(drop=True)
    if isinstance(reason, str):
        reasons = pd.Series(reason, index=ids.index, dtype=object)
    else:
        reasons = pd.Series(reason, dtype=object).reset_index(drop=True)
    return pd.DataFrame(
        {
            "partner_id": ids.where(ids.notna(), "").astype(str),
            "as_of": pd.Series(as_of, index=ids.index, dtype="datetime64[us]"),
            "reason": reasons.astype(str),
        },
        columns=list(REJECT_COLUMNS),
    )
