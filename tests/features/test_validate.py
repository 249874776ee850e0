"""The contract and the malformed-input corpus: every case's exact outcome."""

import pandas as pd
import pytest

from partnerscore.features.contract import TABLES, contract_markdown, schema
from partnerscore.features.validate import check_schemas, load_raw, run_validate
from partnerscore.serving.cli import main

PARTNERS = (
    "partner_id,partner_name,signed_at,tier,region,industry,partner_type,market_alignment\n"
    "P1,Acme,2024-01-10,gold,NA,software,reseller,4\n"
    "P2,Beta & Co,2024-02-01 09:30:00,silver,EMEA,retail,msp,\n"
)
DEALS = (
    "deal_id,partner_id,created_at,closed_at,amount,status\n"
    "D1,P1,2024-02-01,2024-03-01,1000,won\n"
    "D2,P2,2024-03-01,,500,open\n"
)


def make_raw(tmp_path, **tables):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    files = {"partners": PARTNERS, "deals": DEALS, **tables}
    for name, text in files.items():
        if text is None:
            continue
        mode = "wb" if isinstance(text, bytes) else "w"
        with open(raw / f"{name}.csv", mode) as handle:
            handle.write(text)
    return raw


def run_cli(raw, capsys):
    code = main(["validate", str(raw)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def quarantine(raw, table):
    return pd.read_csv(raw / "quarantine" / f"{table}.csv", dtype=str, keep_default_na=False)


def assert_accounted(report):
    for name, t in report.tables.items():
        assert t.valid_rows + t.quarantined == t.input_rows, name


def test_clean_minimal_folder(tmp_path):
    raw = make_raw(tmp_path)
    data = load_raw(raw)
    assert data.report.quarantined_total == 0
    assert data.tables["partners"]["region"].tolist() == ["NA", "EMEA"]  # "NA" is not missing
    assert data.tables["partners"]["market_alignment"].isna().tolist() == [False, True]
    assert str(data.tables["deals"]["amount"].dtype) == "float64"
    assert data.data_end == pd.Timestamp("2024-03-01")
    check_schemas(data)
    assert not (raw / "quarantine" / "deals.csv").exists()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"deals": None}, "missing required table 'deals' (deals.csv or deals.parquet)"),
        (
            {"deals": "deal_id,partner_id,created_at,amount,status\n"},
            "deals.csv: missing required column 'closed_at'",
        ),
        ({"deals": ""}, "deals.csv: empty file"),
        (
            {"deals": "deal_id,partner_id,created_at,closed_at,amount,status\n"},
            "deals.csv: no data rows",
        ),
        (
            {"activities": b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage"},
            "activities.csv: not UTF-8 text",
        ),
        (
            {
                "deals": 'deal_id,partner_id,created_at,closed_at,amount,status\n"D1,P1,2024-01-01,,1,open\n'
            },
            "deals.csv: cannot read file",
        ),
    ],
)
def test_file_level_errors_are_one_line(tmp_path, capsys, files, message):
    raw = make_raw(tmp_path, **files)
    code, _, err = run_cli(raw, capsys)
    assert code == 2
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("error: ") and message in err


def test_parquet_that_is_not_parquet(tmp_path, capsys):
    raw = make_raw(tmp_path)
    (raw / "feedback.parquet").write_bytes(b"definitely not parquet")
    code, _, err = run_cli(raw, capsys)
    assert code == 2 and "feedback.parquet: cannot read file" in err


def test_table_given_twice(tmp_path, capsys):
    raw = make_raw(tmp_path)
    pd.read_csv(raw / "deals.csv").to_parquet(raw / "deals.parquet")
    code, _, err = run_cli(raw, capsys)
    assert code == 2 and "table 'deals' given twice" in err


def test_missing_folder(tmp_path, capsys):
    code, _, err = run_cli(tmp_path / "nope", capsys)
    assert code == 2 and "raw data folder not found" in err


def test_row_problems_go_to_quarantine_with_row_and_reason(tmp_path, capsys):
    deals = (
        "deal_id,partner_id,created_at,closed_at,amount,status\n"
        "D1,P1,2024-02-01,2024-03-01,1000,won\n"  # row 1 ok
        "D2,P1,2024-02-02,,-5,open\n"  # row 2 negative amount
        "D3,P9,2024-02-02,,5,open\n"  # row 3 unknown partner
        "D4,P1,not-a-date,,5,open\n"  # row 4 bad date
        "D1,P2,2024-03-01,,7,open\n"  # row 5 duplicate id
        "D6,P1,2023-12-01,,5,open\n"  # row 6 before signing
        "D7,P1,2024-02-01,2024-01-20,5,lost\n"  # row 7 closed before created
        "D8,P1,2024-02-01,,5,won\n"  # row 8 won without closed_at
        "D9,P1,2024-02-01,2024-02-03,5,open\n"  # row 9 open with closed_at
        "D10,P1,2024-02-01,,abc,pending\n"  # row 10 two problems
    )
    raw = make_raw(tmp_path, deals=deals)
    code, out, _ = run_cli(raw, capsys)
    assert code == 0
    assert "quarantined rows written to" in out
    q = quarantine(raw, "deals").set_index("_row")
    assert sorted(q.index.astype(int)) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    reasons = q["reason"]
    assert reasons["2"] == "amount '-5' below 0"
    assert reasons["3"] == "unknown partner_id 'P9'"
    assert reasons["4"] == "created_at 'not-a-date' is not a date"
    assert reasons["5"] == "duplicate deal_id 'D1' (first at row 1)"
    assert reasons["6"].startswith(
        "created_at '2023-12-01' before the partner's signed_at 2024-01-10"
    )
    assert reasons["7"] == "closed_at '2024-01-20' before created_at '2024-02-01'"
    assert reasons["8"] == "status 'won' needs closed_at"
    assert reasons["9"] == "status 'open' but closed_at is set"
    assert (
        reasons["10"] == "amount 'abc' is not a number; status 'pending' not one of open/won/lost"
    )
    assert q.loc["2", "deal_id"] == "D2"  # original values kept
    data = load_raw(raw)
    assert data.tables["deals"]["deal_id"].tolist() == ["D1"]
    assert_accounted(data.report)


def test_duplicate_keeps_first_valid_occurrence(tmp_path):
    deals = (
        "deal_id,partner_id,created_at,closed_at,amount,status\n"
        "D1,P1,bad,,1,open\n"
        "D1,P1,2024-02-01,,2,open\n"
        "D1,P1,2024-02-01,,3,open\n"
    )
    data = load_raw(make_raw(tmp_path, deals=deals))
    assert data.tables["deals"]["amount"].tolist() == [2.0]
    q = data.quarantine["deals"]
    assert q["reason"].tolist() == [
        "created_at 'bad' is not a date",
        "duplicate deal_id 'D1' (first at row 2)",
    ]


def test_ranges_enums_booleans_and_missing(tmp_path):
    partners = (
        PARTNERS
        + "P3,Gamma,2024-01-01,gold,NA,software,si,9\nP4,,2024-01-01,gold,NA,software,si,3\n"
    )
    activities = (
        "activity_id,partner_id,occurred_at,activity_type,response_hours\n"
        "A1,P1,2024-02-01,meeting,2\nA2,P1,2024-02-01,dinner,2\nA3,P1,2024-02-01,call,-1\n"
    )
    trainings = (
        "partner_id,course_id,enrolled_at,completed_at,is_certification\n"
        "P1,C1,2024-02-01,2024-02-05,Yes\nP1,C2,2024-02-01,2024-01-05,no\nP1,C3,2024-02-01,,maybe\n"
    )
    feedback = "partner_id,submitted_at,score\nP1,2024-02-01,5\nP1,2024-02-01,0\n"
    raw = make_raw(
        tmp_path, partners=partners, activities=activities, trainings=trainings, feedback=feedback
    )
    data = load_raw(raw)
    reasons = {
        t: data.quarantine[t]["reason"].tolist()
        for t in ("partners", "activities", "trainings", "feedback")
    }
    assert reasons["partners"] == ["market_alignment '9' above 5", "partner_name is missing"]
    assert reasons["activities"] == [
        "activity_type 'dinner' not one of meeting/call/email/qbr/co_sell/joint_event",
        "response_hours '-1' below 0",
    ]
    assert reasons["trainings"] == [
        "completed_at '2024-01-05' before enrolled_at '2024-02-01'",
        "is_certification 'maybe' is not true/false",
    ]
    assert data.tables["trainings"]["is_certification"].tolist() == [True]
    assert reasons["feedback"] == ["score '0' below 1"]
    assert_accounted(data.report)


def test_bom_crlf_timezones_and_extra_columns(tmp_path):
    partners = PARTNERS.replace("\n", "\r\n")
    deals = (
        "\ufeffdeal_id,partner_id,created_at,closed_at,amount,status,note\r\n"
        "D1,P1,2024-02-01T10:00:00+02:00,2024-03-01T00:00:00Z,1000,won,hello\r\n"
    )
    raw = make_raw(tmp_path, partners=partners, deals=deals)
    data = load_raw(raw)
    deals_clean = data.tables["deals"]
    assert list(deals_clean.columns) == [c.name for c in TABLES["deals"].columns]
    assert deals_clean["created_at"].iloc[0] == pd.Timestamp("2024-02-01 08:00:00")
    assert deals_clean["closed_at"].iloc[0] == pd.Timestamp("2024-03-01 00:00:00")


def test_parquet_input_equivalent_to_csv(tmp_path):
    raw = make_raw(tmp_path)
    csv_data = load_raw(raw)
    pq = tmp_path / "pq"
    pq.mkdir()
    for name, frame in csv_data.tables.items():
        frame.to_parquet(pq / f"{name}.parquet")
    pq_data = load_raw(pq)
    for name in csv_data.tables:
        pd.testing.assert_frame_equal(csv_data.tables[name], pq_data.tables[name])


def test_stale_quarantine_files_removed(tmp_path):
    bad = "deal_id,partner_id,created_at,closed_at,amount,status\nD1,P1,x,,1,open\nD2,P1,2024-02-01,,1,open\n"
    raw = make_raw(tmp_path, deals=bad)
    load_raw(raw)
    assert (raw / "quarantine" / "deals.csv").exists()
    (raw / "deals.csv").write_text(DEALS)
    load_raw(raw)
    assert not (raw / "quarantine" / "deals.csv").exists()


def test_simulated_program_is_clean(raw_dir):
    report = run_validate(raw_dir)
    assert report.quarantined_total == 0
    assert "truth.csv" in report.ignored
    assert_accounted(report)
    assert len(report.tables) == len(TABLES)


def test_every_row_accounted_on_corrupted_simulated_data(sim_tables, tmp_path):
    from partnerscore.features.simulate import write_tables

    tables = {k: v.copy() for k, v in sim_tables.items() if k != "truth"}
    acts = tables["activities"]
    acts.loc[acts.index[::50], "activity_type"] = "webinar"
    acts.loc[acts.index[::70], "partner_id"] = "GHOST"
    write_tables(tables, tmp_path, fmt="csv")
    data = load_raw(tmp_path)
    t = data.report.tables["activities"]
    assert t.input_rows == len(acts)
    assert t.quarantined >= len(acts.index[::50])
    assert t.valid_rows + t.quarantined == t.input_rows
    assert len(pd.read_csv(tmp_path / "quarantine" / "activities.csv")) == t.quarantined


def test_contract_is_published():
    text = contract_markdown()
    for name in TABLES:
        assert f"`{name}`" in text
    assert "one of open, won, lost" in text
    assert set(schema("deals").columns) == {c.name for c in TABLES["deals"].columns}
