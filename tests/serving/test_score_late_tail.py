"""The score job's stale check under a late tail (features/validate.py::late_tail)."""

import pandas as pd
import pytest


def test_a_late_tail_makes_a_later_as_of_stale():
    """One partner's rows months after everyone else's moved the stale check's newest event:
    a batch five months past the other partners' data was scored (420 guardrail flags). The
    check now reads where every other partner's data ends."""
    from types import SimpleNamespace

    from partnerscore.features.core import PartnerscoreError
    from partnerscore.features.validate import LateTail
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.score import batch_scope

    tail = LateTail(
        pd.Timestamp("2026-12-04 10:00"), pd.Timestamp("2026-06-30 18:00"), 10, ("P1",),
        {"portal_events": 1},
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["P1", "P2"], "signed_at": pd.to_datetime(["2025-01-01", "2025-02-01"])}
    )
    raw = SimpleNamespace(
        data_end=tail.newest, late_tail=tail, tables={"partners": partners}, quarantine={}
    )
    config = AppConfig()  # score.as_of_tolerance_days 45: the limit is 2026-08-15
    assert batch_scope(raw, "raw", pd.Timestamp("2026-08-15").date(), None, config)[4].all()
    with pytest.raises(PartnerscoreError, match=r"--as-of 2026-08-16: .*rests on 1 partner"):
        batch_scope(raw, "raw", pd.Timestamp("2026-08-16").date(), None, config)
    raw.late_tail = None  # without the tail, the newest event decides (as before)
    assert batch_scope(raw, "raw", pd.Timestamp("2026-12-01").date(), None, config)[4].all()


def test_at_age_readiness_reads_the_supported_data_end():
    """A partner was "old enough" by the newest event: one late row made partners ready whose
    milestone lies past every other partner's data (their features count unseen days as
    quiet). Readiness now reads the supported date, as the stale check does."""
    from types import SimpleNamespace

    from partnerscore.features.core import PartnerscoreError
    from partnerscore.features.validate import LateTail
    from partnerscore.serving.config import AppConfig
    from partnerscore.serving.score import batch_scope

    tail = LateTail(
        pd.Timestamp("2026-12-04 10:00"), pd.Timestamp("2026-06-30 18:00"), 10, ("P1",),
        {"portal_events": 1},
    )  # fmt: skip
    partners = pd.DataFrame(
        {
            "partner_id": ["P1", "P2", "P3"],
            "signed_at": pd.to_datetime(["2025-01-01", "2026-04-01", "2026-06-01"]),
        }
    )
    raw = SimpleNamespace(
        data_end=tail.newest, late_tail=tail, tables={"partners": partners}, quarantine={}
    )
    config = AppConfig()
    end, *_, ready = batch_scope(raw, "raw", None, 90, config)
    assert end == tail.supported and ready.tolist() == [True, True, False]  # P3: 2026-08-30
    with pytest.raises(PartnerscoreError, match=r"no partner is 600 days old by the supported"):
        batch_scope(raw, "raw", None, 600, config)
    raw.late_tail = None
    assert batch_scope(raw, "raw", None, 90, config)[4].all()


def test_milestone_features_skip_partners_past_the_supported_end(raw_dir, tmp_path):
    """``build_scoring_frame_at_age`` (the pandas job's, the grouped job's and the Spark job's
    features) counts the partners whose milestone lies past the supported end as not ready."""
    from support import with_late_rows

    from partnerscore.features.core import milestone_dates
    from partnerscore.features.pipeline import build_scoring_frame_at_age
    from partnerscore.features.validate import load_raw

    with_late_rows(raw_dir, tmp_path / "raw")
    raw = load_raw(tmp_path / "raw", write_quarantine=False)
    supported = raw.late_tail.supported
    milestones = milestone_dates(raw.tables["partners"]["signed_at"], 90)
    late = int((milestones > supported).sum())
    assert late > 0 and (milestones <= raw.data_end).all()
    features, skipped = build_scoring_frame_at_age(raw, 90)
    assert skipped == late and pd.to_datetime(features["as_of"]).max() <= supported


@pytest.mark.slow
def test_whole_and_grouped_at_age_jobs_skip_partners_past_the_supported_end(
    raw_dir, store_config, tmp_path
):
    """``score --at-age`` under a late tail, scored whole and in partner groups from the
    snapshot: the same files, the partners past the supported end counted as not yet."""
    from support import with_late_rows

    from partnerscore.features.core import milestone_dates
    from partnerscore.features.validate import load_raw
    from partnerscore.features.validated import default_dir, run_validate_snapshot
    from partnerscore.serving.score import rejects_path, run_score

    raw = tmp_path / "raw"
    with_late_rows(raw_dir, raw)
    run_validate_snapshot(raw, default_dir(raw))
    checked = load_raw(raw, write_quarantine=False)
    late = (
        milestone_dates(checked.tables["partners"]["signed_at"], 90) > checked.late_tail.supported
    )
    got = {}
    for size in (0, 50):
        out = tmp_path / f"g{size}" / "scores.csv"
        result = run_score(raw, None, "champion", out, store_config, at_age=90, group_partners=size)
        assert result.not_yet == int(late.sum()) > 0
        assert f"warning: {checked.late_tail.note()}" in result.summary()
        got[size] = (out.read_bytes(), rejects_path(out).read_bytes())
        scores = pd.read_csv(out, dtype={"partner_id": str})
        assert pd.to_datetime(scores["as_of"]).max() <= checked.late_tail.supported
    assert got[0] == got[50]
