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
