import numpy as np
import pandas as pd
import pytest

from partnerscore.features.builders import BUILDERS, Snapshots
from partnerscore.features.registry import (
    LAYERS,
    REGISTRY,
    data_dictionary,
    feature_specs,
    get_spec,
    registry_version,
)
from partnerscore.serving.cli import main


def test_names_unique_and_declarations_complete():
    names = [s.name for s in REGISTRY]
    assert len(names) == len(set(names))
    for spec in REGISTRY:
        assert spec.layer in LAYERS
        assert spec.description and spec.label and spec.owner and spec.unit
        assert spec.source in BUILDERS
    assert get_spec("nope") is None


def test_every_builder_output_is_declared_and_every_declaration_built(sim_tables):
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    snaps = pd.DataFrame({"partner_id": tables["partners"]["partner_id"].head(20)})
    snaps["as_of"] = pd.Timestamp("2026-01-01")
    ctx = Snapshots.from_frame(snaps, tables["partners"])
    for source, builder in BUILDERS.items():
        built = set(builder(tables, ctx))
        declared = {s.name for s in REGISTRY if s.source == source}
        assert built == declared, source
        for name, values in builder(tables, ctx).items():
            assert len(values) == len(snaps), name


def test_every_numeric_feature_declares_a_range_that_its_builder_keeps(sim_tables):
    """score --features and whatif --set refuse values outside a unit's range: a new unit needs
    one, and the builders stay inside it on a simulated program (every partner at 1, 30, 90,
    180 and 400 days)."""
    from partnerscore.features.registry import value_range

    for spec in REGISTRY:
        if spec.kind == "numeric":
            lo, hi = value_range(spec)
            assert lo < hi, spec.name
        else:
            assert value_range(spec) is None
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    partners = tables["partners"]
    snaps = pd.concat(
        pd.DataFrame(
            {
                "partner_id": partners["partner_id"],
                "as_of": pd.to_datetime(partners["signed_at"]) + pd.Timedelta(days=days),
            }
        )
        for days in (1, 30, 90, 180, 400)
    ).reset_index(drop=True)
    ctx = Snapshots.from_frame(snaps, partners)
    checked = 0
    for builder in BUILDERS.values():
        for name, values in builder(tables, ctx).items():
            spec = get_spec(name)
            if spec.kind != "numeric":
                continue
            values = np.asarray(values, dtype=float)
            lo, hi = value_range(spec)
            assert not ((values < lo) | (values > hi)).any(), (name, values.min(), values.max())
            checked += int(np.isfinite(values).sum())
    assert checked > 50_000


def test_actionable_features_are_the_ones_a_manager_can_move():
    actionable = {s.name for s in REGISTRY if s.actionable}
    assert {"activities_touchpoints_30d", "trainings_completed_90d", "portal_events_90d"} <= (
        actionable
    )
    assert {"marketing_commitments_90d", "leads_created_90d"} <= actionable
    for spec in REGISTRY:
        if spec.source in ("partners", "deals", "feedback") or "days_to_first" in spec.name:
            assert not spec.actionable, spec.name
    assert "| actionable |" in data_dictionary("markdown").splitlines()[2]


def test_optional_tables_drop_their_features():
    only_required = feature_specs(["partners", "deals"])
    assert {s.source for s in only_required} == {"partners", "deals"}
    assert len(feature_specs()) == len(REGISTRY)


def test_every_layer_is_populated_and_version_is_stable():
    assert {s.layer for s in REGISTRY} == set(LAYERS)
    assert registry_version() == registry_version()
    assert len(registry_version()) == 12


def test_data_dictionary_text_and_markdown(capsys):
    text = data_dictionary()
    assert all(s.name in text and s.label in text for s in REGISTRY)
    assert len(text.splitlines()) == len(REGISTRY) + 2
    with pytest.raises(ValueError):
        data_dictionary("html")
    md = data_dictionary("markdown")
    assert md.count("\n| `") == len(REGISTRY)
    assert main(["metrics", "--markdown"]) == 0
    assert "| `deals_won_amount_todate` |" in capsys.readouterr().out


def test_recency_declarations_are_days_since_the_latest_event(sim_tables):
    """A recency (``recency``: the only thing an owner can do to it is an event now, -> 0) is
    days since the latest event: with no event in between, ``d`` days later it is ``d`` more."""
    recency = [s for s in REGISTRY if s.recency]
    assert {s.source for s in recency} >= {"activities", "leads", "portal_events", "trainings"}
    for spec in recency:
        assert spec.kind == "numeric" and spec.unit == "days", spec.name
        assert spec.direction != "higher_is_better", spec.name
    tables = {k: v for k, v in sim_tables.items() if k != "truth"}
    ids = tables["partners"]["partner_id"]
    built = {}
    for when in ("2026-01-01", "2026-01-11"):
        snaps = pd.DataFrame({"partner_id": ids, "as_of": pd.Timestamp(when)})
        ctx = Snapshots.from_frame(snaps, tables["partners"])
        built[when] = {k: v for b in BUILDERS.values() for k, v in b(tables, ctx).items()}
    for spec in recency:
        before, after = built["2026-01-01"][spec.name], built["2026-01-11"][spec.name]
        quiet = (after > 10) & np.isfinite(before)  # no event in [as_of, as_of + 10 days)
        assert quiet.sum() > 10, spec.name
        np.testing.assert_allclose(after[quiet] - before[quiet], 10.0, atol=1e-6, err_msg=spec.name)
    assert "| recency |" in data_dictionary("markdown").splitlines()[2]
    assert "gap_mean" not in " ".join(s.name for s in recency)  # days, but not since an event


def test_a_declaration_pickled_before_recency_existed_reads_the_registry():
    """Models pickled before the attribute hold declarations without it (their ``__dict__``
    as unpickled): the current registry's declaration of the name answers."""
    from partnerscore.features.registry import is_recency

    older = []
    for name in ("activities_days_since_last", "activities_gap_mean_days_todate"):
        spec = get_spec(name).model_copy()
        del spec.__dict__["recency"]
        older.append(spec)
    assert [is_recency(s) for s in older] == [True, False]
    gone = older[0].model_copy()
    gone.__dict__["name"] = "a_feature_this_registry_dropped"
    assert not is_recency(gone)
