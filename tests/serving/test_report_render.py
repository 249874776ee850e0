"""The partner page without Jinja, and the column-at-a-time helpers, against their slow twins.

``PageRenderer`` must write exactly what ``templates/partner.html`` renders from
``page_context`` (the template stays the readable definition of the page); the SVG charts equal
their plain versions in ``report_reference.py``; the number and text helpers equal the
per-value functions they replace.
"""

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from support import sibling

from partnerscore.features.core import write_frame_atomic
from partnerscore.serving import report_pages as rp
from partnerscore.serving.config import AppConfig
from partnerscore.serving.history import ScoreHistory
from partnerscore.serving.report import (
    HERE,
    _environment,
    _flag,
    _money,
    _num,
    _pct,
    _text,
    _waterfall,
    line_svg,
    money_texts,
    num_texts,
    pct_texts,
    read_notes,
    read_scores,
    report_filename,
    text_column,
)

ref = sibling(__file__, "report_reference")
pages_module = sibling(__file__, "test_report_pages")
CSS = Markup((HERE / "static" / "report.css").read_text(encoding="utf-8"))
HOSTILE_TEXT = st.text(alphabet=st.sampled_from(list("ab <>&\"'·–é株 \n")), max_size=12)


def assert_renderer_matches_template(batch: rp.PageBatch) -> None:
    template = _environment().get_template("partner.html")
    render = rp.PageRenderer(batch)
    for j in range(len(batch)):
        assert render(j) == template.render(rp.page_context(batch, j)), batch.files[j]


def test_renderer_matches_the_template_on_a_scored_program(scored_dir, tmp_path):
    root, cfg = scored_dir
    frame = read_scores(root / "scores.csv")
    ids = frame["partner_id"].tolist()
    notes = tmp_path / "notes.csv"
    pd.DataFrame(
        {
            "partner_id": [ids[0], ids[0], ids[1], ids[5]],
            "note": ['<b>call back</b> & "soon"', "second", "no date", "x"],
            "noted_at": ["2026-02-01", "2026-02-03", "", "2026-01-05"],
            "author": ["Ann <ops>", "", "Bo", ""],
        }
    ).to_csv(notes, index=False)
    keep = np.ones(len(frame), dtype=bool)
    files = [report_filename(p) for p in ids]
    plan = rp.plan_pages(frame, keep, files, cfg, css=CSS, note_map=read_notes(notes))
    try:
        whole = rp.chunk_batch(plan, 0, len(plan))
        assert sum(e - s >= 2 for s, e in whole.history.spans) > 300  # trajectories drawn
        assert_renderer_matches_template(whole)
        # chunks give the pages of the whole batch
        pages = [rp.PageRenderer(whole)(j) for j in range(len(whole))]
        for start, end in ((0, 7), (7, 250), (250, len(plan))):
            chunk = rp.chunk_batch(plan, start, end)
            assert [rp.PageRenderer(chunk)(j) for j in range(len(chunk))] == pages[start:end]
    finally:
        rp.close_history()


OPTIONAL_TEXTS = (
    "tier_held_reason",
    "intervention_owner",
    "intervention_review_date",
    "tier_action",
    "tier_action_detail",
    "tier_action_owner",
    "tier_review_date",
    "override_tier",
    "override_action",
    "override_reason",
    "override_expires",
    "next_tier",
    "next_tier_changes",
    "score_tier_candidate",
    "model_version",
    "anomaly_reason",
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pages_module.programs(), st.data())
def test_renderer_matches_the_template_on_generated_batches(program, data):
    frame, earlier = program
    n = len(frame)
    for col in data.draw(st.lists(st.sampled_from(OPTIONAL_TEXTS), unique=True)):
        frame[col] = data.draw(st.lists(HOSTILE_TEXT, min_size=n, max_size=n))
    for col in ("provisional", "guardrail_flag", "anomaly", "out_of_scope"):
        if data.draw(st.booleans()):
            frame[col] = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    if data.draw(st.booleans()):  # a graduated partner's tier and quadrant actions agree
        same = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        frame["tier_action"] = np.where(same, frame["intervention"], "Grow to tier A")
    if data.draw(st.booleans()):
        frame["partner_name"] = data.draw(st.lists(HOSTILE_TEXT, min_size=n, max_size=n))
    if data.draw(st.booleans()):  # partners without a score have no tier: `tier –` in both
        missing = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        frame["score_tier"] = frame["score_tier"].astype(object).where(~missing, None)
    if data.draw(st.booleans()):  # no prediction, no quadrant: `–` and no quadrant action
        missing = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        for col in ("quadrant", "quadrant_label", "intervention", "intervention_detail"):
            frame[col] = frame[col].astype(object).where(~missing, None)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = AppConfig.model_validate({"paths": {"data_dir": tmp}})
        store = ScoreHistory(cfg.paths.history_database())
        for past in earlier:
            store.upsert(past)
        store.dispose()
        path = Path(tmp) / "scores.parquet"
        write_frame_atomic(frame, path)
        scores = read_scores(path)
        files = [report_filename(p) for p in scores["partner_id"]]
        note = {"text": "a <b>", "when": data.draw(st.sampled_from(["", "2026-01-01"])),
                "author": data.draw(st.sampled_from(["", "&"]))}  # fmt: skip
        batch = rp.build_batch(
            scores, np.ones(n, dtype=bool), files, cfg, css=data.draw(st.sampled_from([CSS, ""])),
            note_map={scores["partner_id"].iloc[0]: [note]},
        )  # fmt: skip
        assert_renderer_matches_template(batch)


finite = st.floats(-1e7, 1e7, allow_nan=False)
number = st.one_of(finite, st.just(math.nan), st.just(math.inf), st.just(-0.0), st.just(0.5))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["leads_qualified_todate", "age_days", "custom_x", "<b>evil</b>",
                         "deals_won_amount_todate", "portal_events_30d", "f1", "f2", "f3", "f4"]),
        st.one_of(finite, st.just(0.0)),
        max_size=10,
    ),
    number,
    number,
    st.booleans(),
)  # fmt: skip
def test_waterfall_matches_the_plain_chart(contributions, base, pred, money):
    names = list(contributions)
    values = np.array(list(contributions.values()), dtype=float)
    order = np.argsort(-np.abs(values), kind="stable")
    fast = _waterfall(names, values[order].tolist(), order.tolist(), base, pred, money)
    assert fast == ref.waterfall_reference(contributions, base, pred, money)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 2000, allow_nan=False), min_size=1, max_size=12),
    st.data(),
    st.dictionaries(HOSTILE_TEXT, st.floats(-10, 110, allow_nan=False), max_size=4),
)
def test_trajectory_chart_matches_the_plain_chart(xs, data, thresholds):
    names = data.draw(st.lists(HOSTILE_TEXT, min_size=1, max_size=3, unique=True))
    series = {
        name: data.draw(st.lists(number, min_size=len(xs), max_size=len(xs))) for name in names
    }
    assert line_svg(xs, series, thresholds=thresholds) == ref.line_svg_reference(
        xs, series, thresholds=thresholds
    )


@given(st.lists(number, max_size=20), st.integers(0, 2), st.booleans())
def test_column_number_texts_equal_the_per_value_texts(values, digits, sign):
    assert num_texts(values, digits, sign) == [_num(v, digits, sign) for v in values]
    assert money_texts(values, sign) == [_money(v, sign) for v in values]
    assert pct_texts(values) == [_pct(v) for v in values]


cell = st.one_of(
    st.none(), st.just(math.nan), HOSTILE_TEXT, st.integers(-2, 2), st.floats(-2, 2), st.booleans()
)


@given(st.lists(cell, max_size=20), st.booleans())
def test_text_and_flag_columns_equal_the_per_cell_functions(cells, as_text):
    if as_text:  # a text column as read_scores gives it (pandas str dtype, missing cells)
        cells = [c if isinstance(c, str) else None for c in cells]
        column = pd.Series(cells, dtype="str")
    else:
        column = pd.Series(cells, dtype=object)
    expected = [_text(v) for v in column.tolist()]
    assert text_column(column).tolist() == expected
    rows = np.arange(len(column))[::-1]
    assert rp.text_codes(column, rows).take(0, len(rows)) == [expected[i] for i in rows]
    frame = pd.DataFrame({"c": column})
    assert rp.flag_column(frame, "c", rows).tolist() == [_flag(column.iloc[i]) for i in rows]


def test_a_tier_action_that_repeats_the_quadrant_action_is_shown_once(scored_dir, tmp_path):
    """A graduated partner's tier and quadrant actions are both the hand-over: one block."""
    root, cfg = scored_dir
    frame = read_scores(root / "scores.csv").head(6)
    same = np.arange(len(frame)) % 2 == 0
    frame["tier_action"] = np.where(same, frame["intervention"], "Grow to tier A")
    files = [report_filename(p) for p in frame["partner_id"]]
    batch = rp.build_batch(frame, np.ones(len(frame), dtype=bool), files, cfg, css=CSS)
    render = rp.PageRenderer(batch)
    for j in range(len(batch)):
        page = render(j)
        assert ('id="tier-action"' in page) is (not same[j]), j
        assert page.count(frame["intervention"].iloc[j]) >= 1


def test_a_graduated_partner_with_a_tier_override_keeps_the_graduated_card(scored_dir):
    """A tier override on a graduated partner keeps the playbook's hand-over as its action
    (``out_of_scope`` decides it), so the card must say so; it said "for the quadrant" once the
    override had replaced the ``graduated`` tier."""
    root, cfg = scored_dir
    frame = read_scores(root / "scores.csv").head(4)
    frame["out_of_scope"] = [True, True, False, False]
    frame["score_tier"] = ["A", "graduated", "B", "C"]  # row 0: an override's tier
    files = [report_filename(p) for p in frame["partner_id"]]
    batch = rp.build_batch(frame, np.ones(len(frame), dtype=bool), files, cfg, css=CSS)
    render = rp.PageRenderer(batch)
    for j, graduated in enumerate(frame["out_of_scope"]):
        page = render(j)
        label = frame["quadrant_label"].iloc[j]
        scope = (
            f"a graduated partner (quadrant {label})" if graduated else f"the quadrant ({label})"
        )
        assert f'id="quadrant-action"><div class="muted">for {scope}</div>' in page, j
    assert_renderer_matches_template(batch)  # the template says the same


def test_a_graduated_page_shows_no_onboarding_tiers(scored_dir):
    """A graduated partner (past the trained onboarding ages) showed the onboarding tier
    thresholds table and the trajectory's tier lines as if they applied to it."""
    root, cfg = scored_dir
    frame = read_scores(root / "scores.csv").head(8)
    frame["out_of_scope"] = [True, False] * 4
    frame["score_tier"] = np.where(frame["out_of_scope"], "graduated", "B")
    frame.loc[2, "score_tier"] = "A"  # an override's tier on a graduated partner: still graduated
    files = [report_filename(p) for p in frame["partner_id"]]
    batch = rp.build_batch(frame, np.ones(len(frame), dtype=bool), files, cfg, css=CSS)
    try:
        render = rp.PageRenderer(batch)
        charted = 0
        for j, graduated in enumerate(frame["out_of_scope"]):
            page = render(j)
            assert ('id="thresholds"' in page) is not graduated, j
            assert ('id="thresholds-graduated"' in page) is graduated, j
            assert 'id="policy"' in page and 'id="quadrant-action"' in page  # facts kept
            if 'class="trajectory"' in page:
                charted += 1
                assert ('class="threshold"' in page) is not graduated, j
                assert ("tier lines" in page) is not graduated, j
        assert charted >= 4
        assert_renderer_matches_template(batch)
    finally:
        rp.close_history()


def test_engagement_change_adds_up_with_the_shown_percents(tmp_path):
    """The change row read "83% -> 79%, -4.5 pts" (exact points against rounded percents);
    every change is now the difference of the two numbers as shown."""
    cfg = AppConfig.model_validate({"paths": {"data_dir": str(tmp_path)}})
    frame = pd.DataFrame(
        {
            "partner_id": ["P1"], "partner_name": ["one"], "as_of": pd.Timestamp("2026-03-01"),
            "tier": ["gold"], "region": ["EMEA"], "industry": ["software"],
            "partner_type": ["msp"], "score": [42.96], "score_tier": ["C"],
            "pred_revenue": [100.4], "pred_engagement": [0.789],
            "quadrant": ["low_revenue_high_engagement"],
            "quadrant_label": ["low revenue high engagement"], "intervention": ["Enable"],
            "intervention_detail": ["Do it."],
        }
    )  # fmt: skip
    past = frame.copy()
    past["as_of"] = pd.Timestamp("2026-02-01")
    past["score"], past["pred_engagement"], past["pred_revenue"] = 48.64, 0.834, 99.6
    store = ScoreHistory(cfg.paths.history_database())
    store.upsert(past)
    store.dispose()
    path = tmp_path / "scores.parquet"
    write_frame_atomic(frame, path)
    scores = read_scores(path)
    files = [report_filename(p) for p in scores["partner_id"]]
    batch = rp.build_batch(scores, np.ones(1, dtype=bool), files, cfg, css=CSS)
    measures = {m[0]: m[1:] for m in rp.page_changes(batch, 0)["measures"]}
    assert measures["Engagement likelihood"] == ("83.4%", "78.9%", "-4.5 pts")
    assert measures["Composite score"] == ("48.6", "43.0", "-5.6")  # not -5.7
    assert measures["Expected revenue"] == ("$100", "$100", "+$0")  # not +$1
    assert_renderer_matches_template(batch)
