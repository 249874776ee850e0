import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from partnerscore.features.registry import get_spec
from partnerscore.models import explain


def test_revenue_head_effects_add_up_to_prediction_exactly():
    rng = np.random.default_rng(3)
    phi = rng.normal(0, 0.4, size=(500, 12))
    base = np.full(500, np.log(2000.0))
    head = explain.explain_head(phi, base, np.exp)
    np.testing.assert_allclose(head.pred, np.exp(base + phi.sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(head.base, 2000.0)
    np.testing.assert_allclose(head.base + head.effects.sum(axis=1), head.pred, rtol=1e-12)


def test_same_sign_rows_are_shared_exactly_in_proportion_to_phi():
    phi = np.array([[0.5, 0.2, 0.0, 0.3], [-0.1, -0.3, -0.6, 0.0]])
    head = explain.explain_head(phi, np.zeros(2), np.exp)
    gap = head.pred - head.base
    np.testing.assert_allclose(head.effects, phi / phi.sum(axis=1, keepdims=True) * gap[:, None])
    assert head.effects[0, 2] == 0.0 and head.effects[1, 3] == 0.0


def test_cancelling_contributions_stay_finite_and_signed():
    # sum(phi) is exactly 0: plain proportional sharing would divide by zero
    phi = np.array([[3.0, -3.0, 0.0], [1e-14, -1e-14, 0.0], [0.0, 0.0, 0.0]])
    head = explain.explain_head(phi, np.full(3, np.log(1000.0)), np.exp)
    assert np.isfinite(head.effects).all()
    np.testing.assert_allclose(head.effects.sum(axis=1), 0.0, atol=1e-9)
    assert head.effects[0, 0] > 1000 and head.effects[0, 1] < -1000  # both moves are shown
    np.testing.assert_allclose(head.effects[2], 0.0)


def test_step_link_with_cancelling_contributions_stays_within_its_range():
    # an isotonic calibration map is flat with jumps: sum(phi) ~ 0 straddling a jump
    def step(m):
        return np.where(m < 1e-5, 0.2, 0.8)

    phi = np.array([[3.0, -2.9999, 0.0]])
    head = explain.explain_head(phi, np.zeros(1), step)
    assert head.pred[0] == 0.8 and head.base[0] == 0.2
    assert np.abs(head.effects).sum() <= 0.61  # on the scale of the jump, never beyond
    assert head.effects[0, 0] == pytest.approx(0.6, abs=1e-4)  # the feature that crossed it
    np.testing.assert_allclose(head.base + head.effects.sum(axis=1), head.pred)


def test_two_opposing_features_get_close_to_their_output_scale_shapley_values():
    b, a, c = np.log(1000.0), 2.0, -1.9
    head = explain.explain_head(np.array([[a, c]]), np.array([b]), np.exp)

    def f(x):
        return np.exp(b + x) - np.exp(b)

    shapley_a = 0.5 * (f(a) + (f(a + c) - f(c)))
    shapley_c = 0.5 * (f(c) + (f(a + c) - f(a)))
    np.testing.assert_allclose(head.effects[0], [shapley_a, shapley_c], rtol=0.01)


def test_isotonic_engagement_head_adds_up():
    rng = np.random.default_rng(5)
    margin = rng.normal(0, 1.5, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-margin))).astype(int)
    iso = IsotonicRegression(y_min=1e-4, y_max=1 - 1e-4, out_of_bounds="clip").fit(margin, y)
    phi = rng.normal(0, 0.5, size=(300, 8))
    base = np.full(300, -0.2)
    head = explain.explain_head(phi, base, iso.predict)
    np.testing.assert_allclose(head.pred, iso.predict(base + phi.sum(axis=1)))
    np.testing.assert_allclose(head.base + head.effects.sum(axis=1), head.pred, atol=1e-12)
    assert np.abs(head.effects).sum(axis=1).max() <= 2.0  # bounded by the probability scale


def test_given_prediction_is_explained_exactly():
    phi = np.array([[0.4, -0.1]])
    head = explain.explain_head(phi, np.zeros(1), np.exp, pred=np.array([1.5]))
    assert head.base[0] + head.effects.sum() == pytest.approx(1.5, abs=1e-12)


def test_layer_subscores():
    specs = [
        get_spec("age_days"),
        get_spec("trainings_enrolled_todate"),
        get_spec("deals_won_todate"),
        get_spec("tier"),
    ]
    out = explain.layer_subscores(np.array([[1.0, 2.0, 3.0, 4.0]]), specs)
    assert {k: v[0] for k, v in out.items()} == {"strategic": 5.0, "execution": 2.0, "results": 3.0}


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("deals_won_amount_todate", 12345.6, "$12,346"),
        ("deals_open_pipeline_amount", 1234567.0, "$1,234,567"),
        ("trainings_completion_rate_todate", 0.5, "50%"),
        ("trainings_days_to_first_completion", 14.4, "14 days"),
        ("trainings_days_to_first_completion", 1.0, "1 day"),
        ("trainings_days_to_first_completion", float("nan"), "not yet"),
        ("deals_win_rate_todate", None, "not yet"),
        ("partners_market_alignment", float("nan"), "unknown"),
        ("partners_channel_reach", 1200.0, "1,200 accounts"),
        ("activities_touchpoints_30d", 3.0, "3"),
        ("activities_touchpoints_30d", 2.5, "2.5"),
        ("portal_events_per30d_todate", 2.26, "2.3 per month"),
        ("feedback_score_mean_todate", 4.0, "4.0 of 5"),
        ("activities_trend_30d_vs_todate", 0.5, "0.50x"),
        ("tier", "gold", "gold"),
        ("partner_type", "value_added_reseller", "value added reseller"),
        ("tier", None, "unknown"),
        ("tier", float("nan"), "unknown"),
    ],
)
def test_format_value(name, value, text):
    assert explain.format_value(value, get_spec(name)) == text


def test_missing_value_of_an_absent_table_is_unknown():
    spec = get_spec("trainings_days_to_first_completion")
    assert explain.format_value(float("nan"), spec, known=False) == "unknown"


def test_int_text_matches_python_grouping():
    values = np.array([0, 7, 999, 1000, 1001, 999999, 1000000, 12345678901, 10**14 + 5])
    assert explain.int_text(values).tolist() == [f"{v:,}" for v in values.tolist()]


def test_format_values_vectorised_equals_one_by_one():
    spec = get_spec("deals_avg_won_size_todate")
    values = np.array([1.0, np.nan, 2500.4, 1.0, 1e7, -3.0])
    many = explain.format_values(values, spec).tolist()
    assert many == [explain.format_value(v, spec) for v in values]
    assert many == ["$1", "not yet", "$2,500", "$1", "$10,000,000", "-$3"]


def test_driver_sentences_read_well():
    certs = get_spec("trainings_certifications_todate")
    text = explain.driver_sentences(
        certs,
        np.array([2.0, 0.0, 1.0, 3.0]),
        np.array([3214.4, -20.0, 50.0, 0.1]),
        np.array([0.041, 0.02, -0.01, 0.0001]),
        positive=True,
    ).tolist()
    assert text == [
        "Certifications earned: 2 — raises expected revenue by $3,214 and engagement "
        "likelihood by 4.1 pts",
        # a positive driver leads with the effect that makes it positive
        "Certifications earned: 0 — raises engagement likelihood by 2.0 pts but lowers "
        "expected revenue by $20",
        "Certifications earned: 1 — raises expected revenue by $50 but lowers engagement "
        "likelihood by 1.0 pts",
        "Certifications earned: 3 — barely moves expected revenue or engagement likelihood",
    ]
    quiet = get_spec("activities_days_since_last")
    assert (
        explain.driver_sentences(quiet, [45.0], [-310.0], [-0.12], positive=False)[0]
        == "Days since last touchpoint: 45 days — lowers expected revenue by $310 and "
        "engagement likelihood by 12.0 pts"
    )
    assert (
        explain.driver_sentences(quiet, [3.0], [50.0], [-0.08], positive=False)[0]
        == "Days since last touchpoint: 3 days — lowers engagement likelihood by 8.0 pts but "
        "raises expected revenue by $50"
    )
    assert explain.driver_sentences(quiet, [], [], [], positive=True).tolist() == []
