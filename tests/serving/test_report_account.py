"""Reports for account owners: subsets, notes, peers by onboarding band, no "$-0"; manual
overrides honoured by scoring and recorded in the decision ledger."""

import numpy as np
import pandas as pd
import pytest
from support import sibling

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.registry import REGISTRY
from partnerscore.serving.cli import main
from partnerscore.serving.ledger import DecisionLedger
from partnerscore.serving.report import (
    _money,
    _num,
    _points,
    absent_features,
    num_texts,
    peer_groups,
    peer_level_keys,
    read_scores,
    report_filename,
    run_report,
    waterfall_svg,
)
from partnerscore.serving.score import run_score

changes_since_last = sibling(__file__, "report_reference").changes_since_last

AS_OF = pd.Timestamp("2026-03-01").date()


@pytest.mark.parametrize("v", [-0.49, -0.0, 0.0, 0.3, -1e-9])
def test_no_negative_zero_dollars(v):
    assert _money(v) == "$0" and _money(v, sign=True) == "+$0"


@pytest.mark.parametrize("v", [-0.04, -0.0, -1e-9])
def test_no_negative_zero_points(v):
    # the layer table read "-0.0" and the waterfall "59 other features: -0.0 pts"
    assert _num(v) == "0.0" and _num(v, sign=True) == "+0.0"
    assert num_texts([v], 1) == ["0.0"] and num_texts([v], 1, sign=True) == ["+0.0"]
    assert _points(v / 100) == "+0.0 pts" and _num(-0.06) == "-0.1"
    svg = waterfall_svg({"a": v / 100, "b": 0.3}, 0.2, 0.5, money=False)
    assert "-0.0 pts" not in svg and "a: +0.0 pts" in svg


def test_money_rounds_before_the_sign():
    assert _money(-0.51) == "-$1" and _money(1234.4) == "$1,234"


def test_peers_are_matched_by_onboarding_band_when_big_enough():
    frame = pd.DataFrame({"tier": ["gold"] * 12, "partner_type": ["msp"] * 12})
    band = np.array(["0-45"] * 6 + ["46-90"] * 4 + ["91-180"] * 2, dtype=object)
    key, name = peer_groups(frame, band)
    assert len(set(key[:6])) == 1 and name[0] == "gold msp, days 0-45"
    # bands under 5 partners fall back to the segment (the key every row holds at that level)
    segment = peer_level_keys(frame, band)[1]
    assert len(set(segment)) == 1 and set(key[6:]) == set(segment)
    assert set(name[6:]) == {"gold msp"} and key[0] != key[6]
    key0, name0 = peer_groups(frame)
    assert set(key0) == set(segment) and set(name0) == {"gold msp"}


def test_changes_since_last_batch():
    prev = {
        "as_of": "2026-01-01",
        "score": 40.0,
        "score_tier": "C",
        "pred_revenue": 100.0,
        "pred_engagement": 0.2,
        "score_results": 1.0,
        "trainings_certifications_todate": 0,
    }
    rec = {**prev, "as_of": "2026-03-01", "score": 55.5, "score_tier": "B", "score_results": 3.5,
           "trainings_certifications_todate": 2}  # fmt: skip
    assert changes_since_last(rec, [prev]) is not None
    got = changes_since_last(rec, [prev, rec])
    assert got["since"] == "2026-01-01"
    assert ("Composite score", "40.0", "55.5", "+15.5") in got["measures"]
    assert ("Tier", "C", "B", "") in got["measures"]
    assert ("results points", "+1.0", "+3.5", "+2.5") in got["measures"]
    assert got["features"] == [{"label": "Certifications earned", "before": "0", "after": "2"}]
    assert changes_since_last(prev, [prev]) is None


def test_report_subset_keeps_whole_batch_statistics(scored_dir, tmp_path):
    root, cfg = scored_dir
    scores = read_scores(root / "scores.csv")
    ids = scores["partner_id"].iloc[[5, 9]].tolist()
    full = tmp_path / "full"
    run_report(root / "scores.csv", full, cfg)
    out = tmp_path / "subset"
    result = run_report(root / "scores.csv", out, cfg, partners=ids)
    pages = sorted(p.name for p in (out / "partners").iterdir())
    assert result.reports == 2 and pages == sorted(report_filename(i) for i in ids)
    # peers and typical values come from the whole batch: the pages are identical
    for pid in ids:
        name = report_filename(pid)
        assert (out / "partners" / name).read_text() == (full / "partners" / name).read_text()
    index = (out / "index.html").read_text()
    assert "pages written for 2 of" in index and '"rows":2,' in index
    tier_out = tmp_path / "tier"
    result = run_report(root / "scores.csv", tier_out, cfg, tier="A")
    assert result.reports == int((scores["score_tier"] == "A").sum())
    with pytest.raises(PartnerscoreError, match="--partners: 'nope' is not in the scores file"):
        run_report(root / "scores.csv", tmp_path / "x", cfg, partners=["nope"])
    with pytest.raises(PartnerscoreError, match="--tier Z: no partner"):
        run_report(root / "scores.csv", tmp_path / "x", cfg, tier="Z")


def test_report_notes_errors(scored_dir, tmp_path):
    root, cfg = scored_dir
    bad = tmp_path / "notes.csv"
    bad.write_text("partner_id,text\nP1,hello\n")
    with pytest.raises(PartnerscoreError, match="notes.csv: missing column 'note'"):
        run_report(root / "scores.csv", tmp_path / "r", cfg, notes=bad)
    bad.write_text("partner_id,note,noted_at\nP1,hello,yesterday\n")
    with pytest.raises(PartnerscoreError, match="row 1: column 'noted_at'"):
        run_report(root / "scores.csv", tmp_path / "r", cfg, notes=bad)


def test_overrides_are_honoured_and_recorded(raw_dir, store_config, tmp_path):
    first = tmp_path / "plain.parquet"
    run_score(raw_dir, AS_OF, "champion", first, store_config, record_history=False)
    plain = pd.read_parquet(first).set_index("partner_id")
    live = plain[plain["score_tier"].isin(["B", "C", "D"])].index
    a, b, c = live[:3]
    overrides = tmp_path / "overrides.csv"
    pd.DataFrame(
        {
            "partner_id": [a, b, c],
            "tier": ["A", "", "D"],
            "action": ["", "Executive sponsor call", ""],
            "reason": ["Signed a strategic deal", "New CEO", "Old news"],
            "expires": ["2026-06-30", "2026-03-01", "2026-02-27"],
        }
    ).to_csv(overrides, index=False)
    cfg = store_config.model_copy(
        update={"score": store_config.score.model_copy(update={"overrides_path": str(overrides)})}
    )
    out = tmp_path / "scores.parquet"
    run_score(raw_dir, AS_OF, "champion", out, cfg)
    scores = pd.read_parquet(out).set_index("partner_id")
    assert scores.loc[a, "score_tier"] == "A" and scores.loc[a, "override_tier"] == "A"
    assert scores.loc[a, "tier_action"] == "Strategic investment"  # the action follows the tier
    assert scores.loc[b, "intervention"] == "Executive sponsor call"
    assert scores.loc[b, "score_tier"] == plain.loc[b, "score_tier"]
    assert scores.loc[c, "override_reason"] == ""  # expired before as_of: not honoured
    assert scores.loc[c, "score_tier"] == plain.loc[c, "score_tier"]
    others = scores.index.difference([a, b])
    assert (scores.loc[others, "score_tier"] == plain.loc[others, "score_tier"]).all()
    ledger = DecisionLedger(cfg.paths.history_database()).read_decisions([a, b, c])
    rec = ledger.set_index("partner_id")
    assert rec.loc[a, "override_reason"] == "Signed a strategic deal"
    assert rec.loc[a, "override_expires"] == "2026-06-30" and rec.loc[a, "score_tier"] == "A"
    assert rec.loc[b, "override_action"] == "Executive sponsor call"
    assert pd.isna(rec.loc[c, "override_reason"])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("partner_id,tier,reason\nP1,A,x\n", "missing column 'expires'"),
        ("partner_id,tier,reason,expires\nP1,Z,x,2026-01-01\n", "row 1: column 'tier': 'Z'"),
        ("partner_id,tier,reason,expires\nP1,A,,2026-01-01\n", "row 1: column 'reason' is empty"),
        ("partner_id,tier,reason,expires\nP1,A,x,soon\n", "row 1: column 'expires': 'soon'"),
        ("partner_id,tier,reason,expires\nP1,A,x,2026-01-01\nP1,B,y,2026-01-01\n", "row 3"),
    ],
)
def test_bad_overrides_are_one_line(raw_dir, tmp_path, capsys, text, needle):
    path = tmp_path / "o.csv"
    path.write_text(text)
    code = main(["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--overrides",
                 str(path), "--out", str(tmp_path / "s.csv")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


@pytest.fixture(scope="module")
def without_tables(raw_dir, model_store, tmp_path_factory):
    """The program scored and reported without its optional activities and trainings tables."""
    import shutil

    root = tmp_path_factory.mktemp("without-tables")
    raw = root / "raw"
    shutil.copytree(raw_dir, raw)
    for name in ("activities", "trainings"):
        (raw / f"{name}.csv").unlink()
    cfg = model_store.model_copy(
        update={"paths": model_store.paths.model_copy(update={"data_dir": str(root / "data")})}
    )
    out = root / "scores.parquet"
    run_score(raw, AS_OF, "champion", out, cfg, record_history=False)
    run_report(out, root / "reports", cfg, workers=1)
    return pd.read_parquet(out), root / "reports"


def test_missing_optional_tables_still_score_without_suggesting_their_measures(without_tables):
    # the next-tier search tried every actionable measure and stopped scoring with a KeyError
    # on the first feature of a missing table ('trainings_enrolled_todate')
    scores, _ = without_tables
    live = scores[scores["next_tier"] != ""]
    assert len(live) and live["next_tier_changes"].str.len().gt(0).any()
    absent = [s.label for s in REGISTRY if s.source in ("activities", "trainings")]
    suggested = {c.split(":")[0] for t in live["next_tier_changes"] for c in t.split("; ") if c}
    assert suggested and not suggested & set(absent)


def test_measures_of_a_missing_table_read_unknown_not_not_yet(without_tables, scored_dir):
    # a missing table's counts read "not yet" in the peer table and the drivers' typical
    # values ("Touchpoints, last 30 days: not yet"): a claim that the partner had none
    import re

    scores, reports = without_tables
    absent = {s.label for s in REGISTRY if s.source in ("activities", "trainings")}
    pages = [reports / "partners" / report_filename(p) for p in scores["partner_id"]]
    peer_rows = typical = 0
    for page in pages:
        html = page.read_text(encoding="utf-8")
        peers = html.split('id="peers"', 1)[1]
        for label, value, median in re.findall(
            r'<tr><td>([^<]*)</td><td class="num">([^<]*)</td><td class="num">([^<]*)</td>', peers
        ):
            if label in absent:
                peer_rows += 1
                assert (value, median) == ("unknown", "unknown"), (page.name, label)
        for label, peer in re.findall(
            r"<li>([^:<]*): [^<]*<span class=\"typical\">\(typical for peers: ([^)]*)\)", html
        ):
            if label in absent:
                typical += 1
                assert peer == "unknown", (page.name, label)
    assert peer_rows >= len(pages) and typical > 0
    # with the tables, a partner without certifications still reads "not yet"
    assert absent_features(pd.read_csv(scored_dir[0] / "scores.csv")) == frozenset()
