"""End-to-end monitoring: clean batches stay green, injected drift alarms on the right things."""

import json

import pandas as pd
import pytest
from support import tables_known_at

from partnerscore.features.config import SimulateConfig
from partnerscore.features.drift_sim import apply_drift, drift_start
from partnerscore.features.simulate import simulate_program, write_tables
from partnerscore.serving.monitor import run_monitor

AS_OF = pd.Timestamp("2026-07-01").date()
EARLY = pd.Timestamp("2026-03-01")  # two months after the simulated drifts start
BATCH_PARTNERS = 3000  # a production-sized batch; simulating it takes about a second


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Raw folders: two clean programs (other seeds) and one per drift kind."""
    root = tmp_path_factory.mktemp("batches")
    out = {}
    for seed in (3, 4):
        cfg = SimulateConfig(partners=BATCH_PARTNERS, seed=seed)
        tables = simulate_program(cfg)
        write_tables(tables, root / f"clean{seed}", fmt="parquet")
        out[f"clean{seed}"] = root / f"clean{seed}"
        if seed == 3:
            start = drift_start(cfg.end_date, 180)
            for kind in ("leads_dry_up", "inflated_deals", "new_partner_type"):
                write_tables(apply_drift(tables, kind, start), root / kind, fmt="parquet")
                out[kind] = root / kind
            # the export an operator has two months into the dry-up
            dry = tables_known_at(apply_drift(tables, "leads_dry_up", start), EARLY)
            write_tables(dry, root / "leads_dry_up_early", fmt="parquet")
            out["leads_dry_up_early"] = root / "leads_dry_up_early"
    return out


def _monitor(store_config, raw, tmp_path, name):
    return run_monitor(store_config, raw, AS_OF, tmp_path / name, log_to_mlflow=False)


def _alarms(result):
    return [c for c in result.checks if c.status == "alarm"]


@pytest.mark.parametrize("name", ["clean3", "clean4"])
def test_clean_batches_raise_no_alarm(store_config, batches, tmp_path, name):
    result = _monitor(store_config, batches[name], tmp_path, name)
    assert _alarms(result) == [], [c.detail for c in _alarms(result)]
    assert result.exit_code == 0
    assert result.batch_rows > 500
    drift = [c for c in result.checks if c.section == "drift" and c.status != "skip"]
    assert len(drift) > 200  # every feature and prediction in every segment was really tested
    payload = json.loads((tmp_path / name / "monitor.json").read_text())
    assert payload["exit_code"] == 0 and payload["counts"]["alarm"] == 0
    assert {"name", "value", "threshold", "status"} <= set(payload["checks"][0])


def test_training_program_itself_raises_no_alarm(store_config, raw_dir, tmp_path):
    result = _monitor(store_config, raw_dir, tmp_path, "same")
    assert _alarms(result) == [], [c.detail for c in _alarms(result)]


def test_leads_dry_up_alarms_on_lead_features_in_that_region(store_config, batches, tmp_path):
    result = _monitor(store_config, batches["leads_dry_up"], tmp_path, "leads")
    alarms = _alarms(result)
    assert alarms and result.exit_code == 1
    assert all(c.subject.startswith("leads_") for c in alarms if c.section == "drift")
    regions = {c.segment for c in alarms if c.segment.startswith("region=")}
    assert regions == {"region=NA"}


def test_leads_drying_up_in_one_region_alarm_two_months_in(store_config, batches, tmp_path):
    """Two months into leads_dry_up (region NA's leads 650 -> 199 in the 90-day window, the
    leads table x0.75 overall) no check warned: the whole-table volume drop is under its 1.5
    ratio and the onboarding features moved too little (their drift alarms came two months
    later). The per-segment volume check, read against the segment's exposure, alarms."""
    result = run_monitor(
        store_config, batches["leads_dry_up_early"], EARLY.date(), tmp_path, log_to_mlflow=False
    )
    alarms = _alarms(result)
    assert [(c.subject, c.segment) for c in alarms] == [("leads", "region=NA")], alarms
    (check,) = alarms
    assert check.name == "quality.segment_volume.leads.region=NA"
    assert "drop x0.3" in check.detail and result.exit_code == 1


def test_inflated_deals_alarm_on_deal_amounts(store_config, batches, tmp_path):
    result = _monitor(store_config, batches["inflated_deals"], tmp_path, "deals")
    names = {c.name for c in _alarms(result)}
    assert "drift.raw.deals.amount" in names
    assert all("deal" in n for n in names), names


def test_new_partner_type_alarms_on_partner_type(store_config, batches, tmp_path):
    result = _monitor(store_config, batches["new_partner_type"], tmp_path, "ptype")
    alarms = _alarms(result)
    assert {c.subject for c in alarms} == {"partner_type"}
    unseen = next(c for c in alarms if c.name == "quality.unseen_categories.partner_type")
    assert "distributor" in unseen.detail
    assert "drift.psi.partner_type.all" in {c.name for c in alarms}
    html = (tmp_path / "ptype" / "monitor.html").read_text()
    assert "<svg" in html and "partner_type" in html
    assert 'src="http' not in html and 'href="http' not in html  # self-contained


def test_a_tier_in_another_case_is_the_tier_the_model_knows(store_config, batches, tmp_path):
    """Scoring reads 'Registered' as the model's 'registered' (PartnerModel.respell); the
    monitor profiled the batch's own spelling and alarmed on 'categories never seen in
    training' and on the tier's PSI for a batch that scores exactly like the clean one."""
    partners = pd.read_parquet(batches["clean3"] / "partners.parquet")
    respelled = tmp_path / "raw"
    for path in batches["clean3"].iterdir():
        (respelled / path.relative_to(batches["clean3"])).parent.mkdir(exist_ok=True)
        (respelled / path.name).write_bytes(path.read_bytes())
    partners.assign(tier=partners["tier"].str.capitalize()).to_parquet(
        respelled / "partners.parquet", index=False
    )
    clean = _monitor(store_config, batches["clean3"], tmp_path, "clean")
    result = _monitor(store_config, respelled, tmp_path, "respelled")
    tier = {c.name: (c.status, c.value) for c in result.checks if c.subject == "tier"}
    assert tier == {c.name: (c.status, c.value) for c in clean.checks if c.subject == "tier"}
    assert _alarms(result) == _alarms(clean) == []


def test_a_model_feature_absent_from_the_batch_alarms_as_all_missing(
    store_config, raw_dir, tmp_path
):
    """Raw tables without an optional table the model reads (portal events): scoring reads its
    features as all-missing, but the monitor profiled only the columns present and said
    nothing about them (0 checks named portal_events_*); now each is a missing-rate alarm."""
    import shutil

    partial = tmp_path / "raw"
    shutil.copytree(raw_dir, partial, ignore=shutil.ignore_patterns("portal_events.*"))
    result = _monitor(store_config, partial, tmp_path, "no_portal")
    missing = {
        c.subject: c
        for c in result.checks
        if c.name.startswith("quality.missing_rate.portal_events_")
    }
    assert missing and all(c.status == "alarm" for c in missing.values())
    assert all("100.0% in the batch" in c.detail for c in missing.values())
    assert result.exit_code == 1


def test_a_monthly_run_mid_program_does_not_flag_new_partners(store_config, batches, tmp_path):
    """A monthly monitor run while partners keep signing: those signed in the last weeks are
    younger than the youngest training snapshot (30 days) every month. They were listed as
    anomalous (`age_days ... outside the training range`) and `quality.out_of_training_range`
    warned on every run of a steady program (44-69 of ~500 in-scope partners, 12 months of a
    3,000-partner program); the batches above, as of the program's end, have no such partner."""
    as_of = pd.Timestamp("2025-09-01").date()
    result = run_monitor(store_config, batches["clean3"], as_of, tmp_path, log_to_mlflow=False)
    young = pd.read_parquet(batches["clean3"] / "partners.parquet")["signed_at"]
    young = pd.to_datetime(young)
    assert ((young < pd.Timestamp(as_of)) & (young >= pd.Timestamp("2025-08-15"))).sum() > 20
    assert "age_days" not in set(result.anomalies["column"])
    check = next(c for c in result.checks if c.name == "quality.out_of_training_range")
    assert check.status == "ok", check.detail


def test_the_scope_check_counts_the_partners_score_graduates():
    """`scope.outside_trained_ages` counted every partner past the oldest trained age (180
    days) and said they were "flagged, not scored as new", while `score` scores partners up to
    `policy.scope_tolerance_days` (90) past it as new: 1,626 "flagged" of a batch whose score
    summary graduated 1,362."""
    from partnerscore.models.config import PolicyConfig
    from partnerscore.serving.monitor import _scope_checks

    as_of = pd.Timestamp("2026-01-01")
    ages = [10, 200, 270.6, 271, 400]  # whole days, as score's age_days: 270.6 is 270
    partners = pd.DataFrame({"signed_at": [as_of - pd.Timedelta(days=a) for a in ages]})
    (check,) = _scope_checks(partners, as_of, [30, 60, 90, 180], PolicyConfig())
    assert check.value == 2 / 5
    assert check.detail.startswith("2 of 5 partners signed before as_of are past the onboarding")
    (check,) = _scope_checks(partners, as_of, [30, 180], PolicyConfig(scope_tolerance_days=0))
    assert check.value == 4 / 5


def test_json_is_compact_alarms_and_warnings_in_full_and_the_file_with_every_check(tmp_path):
    """`monitor --json` printed every check (1,284 on the demo, ~0.5 MB) on each run; a
    scheduler reads the counts and what alarmed or warned. Every documented key stays."""
    from partnerscore.features.checks import Check
    from partnerscore.serving.monitor import MonitorResult

    statuses = ["ok"] * 1094 + ["info"] * 4 + ["skip"] * 186 + ["warn"] * 2 + ["alarm"]
    checks = [
        Check(f"c{i}", "quality", "x", "all", "s", float(i), 1.0, 2.0, None, status, f"d{i}")
        for i, status in enumerate(statuses)
    ]
    files = {"json": tmp_path / "monitor.json"}
    result = MonitorResult(
        tmp_path, AS_OF, "models:/m/1", "1", checks, pd.DataFrame(), pd.DataFrame(), files=files
    )
    payload = json.loads(json.dumps(result.json_payload(), default=str))
    assert [c["status"] for c in payload["checks"]] == ["alarm", "warn", "warn"]
    assert payload["checks"][0] == checks[-1].to_dict()  # in full, as in monitor.json
    assert payload["checks_total"] == 1287 and payload["checks_file"] == str(files["json"])
    assert payload["counts"] == {"alarm": 1, "warn": 2, "ok": 1094, "info": 4, "skip": 186}
    assert payload["exit_code"] == 1
    documented = {"as_of", "model_uri", "model_version", "anomalies", "backtest", "files"}
    assert documented | {"backtest_phases", "batch_rows", "seconds", "run_id"} <= set(payload)
    assert len(json.dumps(payload)) < 3000
