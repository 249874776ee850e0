import numpy as np
import pytest

from partnerscore.features.core import PartnerscoreError
from partnerscore.features.registry import FeatureSpec, get_spec
from partnerscore.models import explain, policy
from partnerscore.models.config import PolicyConfig

REF = {
    "revenue_quantiles": list(np.linspace(0, 1000, 101)),
    "engagement_quantiles": list(np.linspace(0, 1, 101)),
}


def test_output_scale_contributions_add_up_exactly():
    raw = np.array([[0.5, -0.2, 0.1], [0.0, 0.0, 0.0], [1e-14, -1e-14, 0.0]])
    base = np.array([100.0, 100.0, 100.0])
    pred = np.array([100 * np.exp(0.4), 100.0, 103.0])
    out = explain.to_output_scale(raw, pred, base)
    np.testing.assert_allclose(out.sum(axis=1), pred - base, atol=1e-12)
    assert out[0, 0] > 0 and out[0, 1] < 0
    np.testing.assert_allclose(out[2], [1.0, 1.0, 1.0])  # cancelled margins: spread evenly


def test_layer_subscores():
    specs = [
        get_spec("age_days"),
        get_spec("trainings_enrolled_todate"),
        get_spec("deals_won_todate"),
    ]
    out = explain.layer_subscores(np.array([[1.0, 2.0, 3.0]]), specs)
    assert {k: v[0] for k, v in out.items()} == {"strategic": 1.0, "execution": 2.0, "results": 3.0}


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("deals_won_amount_todate", 12345.6, "$12,346"),
        ("trainings_completion_rate_todate", 0.5, "50%"),
        ("trainings_days_to_first_completion", float("nan"), "none yet"),
        ("activities_touchpoints_30d", 3.0, "3"),
        ("portal_events_per30d_todate", 2.25, "2.2 per month"),
        ("feedback_score_mean_todate", 4.0, "4.0 of 5"),
        ("tier", "gold", "gold"),
        ("tier", None, "unknown"),
    ],
)
def test_format_value(name, value, text):
    assert explain.format_value(value, get_spec(name)) == text


def test_driver_sentences_vectorised_equal_scalar():
    spec = get_spec("trainings_certifications_todate")
    values = np.array([2.0, np.nan, 2.0])
    pts = np.array([6.1, -0.4, 3.0])
    many = explain.driver_sentences(spec, values, pts)
    assert many[0] == "Certifications earned: 2 (raises the score by 6.1 pts)"
    assert many[1] == "Certifications earned: unknown (lowers the score by 0.4 pts)"
    assert many == [explain.driver_sentence(spec, v, p) for v, p in zip(values, pts, strict=True)]


def test_percentile_of_reference():
    q = REF["revenue_quantiles"]
    np.testing.assert_allclose(
        policy.percentile_of([0, 500, 1000, 5000, -3, 255], q), [0, 0.5, 1, 1, 0, 0.255]
    )
    tied = [0.0] * 50 + list(np.linspace(0, 1, 51))
    assert policy.percentile_of([0.0], tied)[0] == pytest.approx(0.25)


def test_composite_tier_quadrant():
    cfg = PolicyConfig()
    score, rev, eng = policy.composite_score(
        np.array([1000.0, 0.0, 500.0]), np.array([1.0, 0.0, 0.5]), REF, cfg
    )
    np.testing.assert_allclose(score, [100, 0, 50])
    np.testing.assert_allclose(rev + eng, score)
    assert policy.score_tier(np.array([100, 75, 74.9, 50, 10, 0]), cfg).tolist() == [
        "A",
        "A",
        "B",
        "B",
        "D",
        "D",
    ]
    quads = policy.quadrant(
        np.array([800.0, 800.0, 100.0, 100.0]), np.array([0.9, 0.1, 0.9, 0.1]), REF, cfg
    )
    assert quads.tolist() == list(policy.QUADRANTS)


def test_playbook_interventions_and_provisional():
    cfg = PolicyConfig(min_observation_days=60)
    prov = policy.is_provisional(np.array([30, 60, 400]), cfg)
    assert prov.tolist() == [True, False, False]
    label, title, detail = policy.interventions(
        np.array(["high_revenue_low_engagement"] * 3, dtype=object), prov, cfg
    )
    assert label.tolist() == ["At-risk earners"] * 3
    assert title[1] == "Targeted coaching and accelerated training"
    assert title[0] == "Complete onboarding first"
    assert "coaching" in detail[1]


def test_playbook_override_and_errors(tmp_path):
    path = tmp_path / "book.yaml"
    quads = "\n".join(
        f"  {q}:\n    label: L{i}\n    title: T{i}\n    detail: D{i}"
        for i, q in enumerate(policy.QUADRANTS)
    )
    path.write_text(f"quadrants:\n{quads}\n")
    cfg = PolicyConfig(playbook_path=str(path))
    _, title, _ = policy.interventions(
        np.array(["low_revenue_low_engagement"], dtype=object), np.array([True]), cfg
    )
    assert title.tolist() == ["T3"]  # no provisional entry: quadrant action applies
    path.write_text(f"quadrants:\n{quads.replace('title: T2', 'title: ')}\n")
    with pytest.raises(
        PartnerscoreError,
        match="quadrants.low_revenue_high_engagement: missing or empty key 'title'",
    ):
        policy.load_playbook(PolicyConfig(playbook_path=str(path)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("quadrants: [unclosed\n")
    with pytest.raises(PartnerscoreError, match="not valid YAML"):
        policy.load_playbook(PolicyConfig(playbook_path=str(bad)))
    with pytest.raises(PartnerscoreError, match="playbook file not found"):
        policy.load_playbook(PolicyConfig(playbook_path=str(tmp_path / "none.yaml")))


def test_smoothing_and_guardrail():
    cfg = PolicyConfig(smoothing_window=3, guardrail_threshold=20)
    assert policy.smooth_and_guard(50.0, [], cfg) == (50.0, None, False)
    smoothed, prev, flag = policy.smooth_and_guard(90.0, [10.0, 40.0, 60.0], cfg)
    assert smoothed == pytest.approx((40 + 60 + 90) / 3)
    assert prev == 60.0 and flag is True
    assert policy.smooth_and_guard(75.0, [60.0], cfg)[2] is False
    one = PolicyConfig(smoothing_window=1)
    assert policy.smooth_and_guard(75.0, [10.0], one)[0] == 75.0


def test_feature_spec_is_frozen():
    spec = get_spec("age_days")
    with pytest.raises(ValueError):
        spec.layer = "results"
    assert isinstance(spec, FeatureSpec)
