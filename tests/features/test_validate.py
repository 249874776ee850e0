"""The contract and the malformed-input corpus: every case's exact outcome."""

import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.contract import TABLES, contract_markdown, schema
from partnerscore.features.validate import load_raw, run_validate
from partnerscore.serving.cli import main


def check_schemas(raw) -> None:
    """Assert the clean frames satisfy the published pandera schemas."""
    for name, frame in raw.tables.items():
        schema(name).validate(frame, lazy=True)


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
            "activities.csv: line 1 (the header): not UTF-8 text (byte 0x89)",
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
        "D1,P1,2024-03-01,,7,open\n"  # row 5 duplicate id (of the same partner)
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


def test_a_record_id_of_another_partner_quarantines_no_row_of_that_partner(tmp_path):
    """A record id is unique per partner: a row of one partner holding an id another partner's
    row holds quarantined whichever came second, so one partner's rows (placed first, or with
    every other partner's ids) removed another partner's deals from its features. Each
    partner's rows are now compared with its own only: both rows are kept, a repeat within a
    partner is still a duplicate."""
    base = (
        "deal_id,partner_id,created_at,closed_at,amount,status\n"
        "D1,P1,2024-02-01,,2,open\n"
        "D2,P1,2024-02-02,,3,open\n"
    )
    for name in ("a", "bTrueD1", "bFalseD1", "bTrueD2", "bFalseD2", "c"):
        (tmp_path / name).mkdir()
    alone = load_raw(make_raw(tmp_path / "a", deals=base)).tables["deals"]
    for hostile in ("D1,P2,2024-03-01,2024-03-02,1e300,won\n", "D2,P2,2024-03-01,,5,open\n"):
        for first in (True, False):
            header, *rows = base.splitlines(keepends=True)
            text = header + hostile + "".join(rows) if first else base + hostile
            got = load_raw(make_raw(tmp_path / f"b{first}{hostile[:2]}", deals=text))
            deals = got.tables["deals"]
            mine = deals[deals["partner_id"] == "P1"].reset_index(drop=True)
            pd.testing.assert_frame_equal(mine, alone)
            assert len(deals) == 3 and len(got.quarantine.get("deals", ())) == 0
    repeated = base + "D1,P1,2024-03-01,,9,open\n"
    q = load_raw(make_raw(tmp_path / "c", deals=repeated)).quarantine["deals"]
    assert q["reason"].tolist() == ["duplicate deal_id 'D1' (first at row 1)"]


def _shared_ids_twin(deals: pd.DataFrame) -> tuple[int, list[tuple[str, int, list[str]]]]:
    """The slow, obvious count of the clean deal ids held by several partners, with examples."""
    partners = deals.groupby("deal_id", sort=False)["partner_id"].agg(list)  # first-row order
    shared = partners[partners.str.len() > 1]
    return len(shared), [(i, len(p), p[:5]) for i, p in list(shared.items())[:10]]


def test_record_ids_held_by_several_partners_are_counted_and_kept(tmp_path, capsys):
    """Rows of different partners holding one record id are all kept (a record id is unique
    per partner), silently: a deal exported under two partners counted for both and nothing
    told the data steward. The summary, ``--json`` and the report now count such ids per table,
    with the first ten (in order of their first kept row) and their first five partners."""
    import json

    partners = "partner_id,partner_name,signed_at,tier,region,industry,partner_type\n" + "".join(
        f"P{i},N{i},2024-01-01,gold,NA,software,reseller\n" for i in range(1, 10)
    )
    deals = "deal_id,partner_id,created_at,closed_at,amount,status\n"
    deals += "Z,P9,bad-date,,1,open\n"  # quarantined: not Z's first kept row
    deals += "".join(f"X{k:02d},P1,2024-02-01,,1,open\n" for k in range(5))
    deals += "".join(f"Z,P{i},2024-02-02,,1,open\n" for i in (8, 7, 6, 5, 4, 3, 2))
    deals += "".join(f"X{k:02d},P1,2024-02-01,,1,open\n" for k in range(5, 12))
    deals += "".join(f"X{k:02d},P2,2024-02-03,,1,open\n" for k in range(12))
    deals += "X00,P1,2024-02-04,,1,open\nY,P1,2024-02-04,,1,open\n"  # one partner: not shared
    raw = make_raw(tmp_path, partners=partners, deals=deals)
    data = load_raw(raw)
    t = data.report.tables["deals"]
    assert (t.input_rows, t.valid_rows, t.quarantined) == (34, 32, 2)  # nothing more quarantined
    assert t.shared_ids == 13
    examples = [(e.id, e.partner_count, e.partners) for e in t.shared_id_examples]
    assert examples == _shared_ids_twin(data.tables["deals"])[1]
    assert examples[:2] == [("X00", 2, ["P1", "P2"]), ("X01", 2, ["P1", "P2"])]
    assert examples[5] == ("Z", 7, ["P8", "P7", "P6", "P5", "P4"])  # by its first kept row
    assert data.report.tables["partners"].shared_ids == 0
    assert main(["validate", str(raw)]) == 0
    out = capsys.readouterr().out
    assert (
        "deals: 13 deal_id values held by several partners (all rows kept), e.g. 'X00' "
        "(partners 'P1', 'P2'), 'X01' (partners 'P1', 'P2'), 'X02' (partners 'P1', 'P2')\n"
    ) in out
    assert main(["--json", "validate", str(raw)]) == 0
    got = json.loads(capsys.readouterr().out)["tables"]["deals"]
    assert got["shared_ids"] == 13 and len(got["shared_id_examples"]) == 10
    z = got["shared_id_examples"][5]
    assert z == {"id": "Z", "partner_count": 7, "partners": ["P8", "P7", "P6", "P5", "P4"]}
    assert (
        t.shared_id_examples[5].text() == "'Z' (partners 'P8', 'P7', 'P6', 'P5', 'P4' and 2 more)"
    )


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["D1", "D2", "D3", "d1"]), st.sampled_from(["P1", "P2"])),
        max_size=12,
    )
)
def test_shared_ids_equal_their_slow_twin(rows, tmp_path_factory):
    """Any mix of ids and partners (repeats of a partner's id quarantined): the count and the
    examples equal a groupby of the clean rows."""
    tmp = tmp_path_factory.mktemp("shared")
    text = DEALS + "".join(
        f"{d},{p},2024-02-0{k % 9 + 1},,1,open\n" for k, (d, p) in enumerate(rows)
    )
    data = load_raw(make_raw(tmp, deals=text), write_quarantine=False)
    t = data.report.tables["deals"]
    count, examples = _shared_ids_twin(data.tables["deals"])
    assert t.shared_ids == count
    assert [(e.id, e.partner_count, e.partners) for e in t.shared_id_examples] == examples


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


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {
                "activities": "activity_id,partner_id,occurred_at,response_hours\nA1,P1,2024-02-01,1\n"
            },
            "activities.csv: missing required column 'activity_type'",
        ),
        ({"deals": "\n\n"}, "deals.csv: empty file"),
        (
            {"deals": "deal_id,deal_id,partner_id,created_at,closed_at,amount,status\n"},
            "deals.csv: column 'deal_id' appears twice",
        ),
        (
            {"deals": "deal_id,partner_id,created_at,closed_at,amount,status\nD1,P1,2024-02-01\n"},
            "deals.csv: cannot read file: line 2: CSV parse error: Expected 6 columns, got 3",
        ),
        (
            {"partners": b"partner_id,partner_name\nP1,\xff\xfe\n"},
            "partners.csv: column 'partner_name' row 1: not UTF-8 text (byte 0xFF at line 2)",
        ),
        (
            {
                "partners": "partner_id,partner_name,signed_at,tier,region,industry,partner_type\n"
                "P1,A,never,gold,NA,x,si\n"
            },
            "partners.csv: no valid partner rows",
        ),
    ],
)
def test_more_file_level_errors(tmp_path, capsys, files, message):
    raw = make_raw(tmp_path, **files)
    code, _, err = run_cli(raw, capsys)
    assert code == 2
    assert "\n" not in err and "Traceback" not in err
    assert message in err


def test_optional_tables_rules_and_unknown_files(tmp_path):
    portal = "partner_id,occurred_at,event_type\nP1,2024-02-01,login\nP1,2023-01-01,login\n"
    commitments = (
        "commitment_id,partner_id,committed_at,due_at,delivered_at\n"
        "M1,P1,2024-02-01,2024-03-01,\n"
        "M2,P1,2024-02-01,2024-01-15,2024-01-20\n"
    )
    leads = (
        "lead_id,partner_id,created_at,qualified_at,converted_at\n"
        "L1,P1,2024-02-01,2024-02-03,2024-02-05\n"
        "L2,P1,2024-02-01,2024-01-30,\n"
        "L3,P2,2024-02-05,2024-02-06,2024-02-05T12:00\n"
        "L4,,2024-02-05,,\n"
    )
    feedback = (
        "partner_id,submitted_at,score\nP1,2024-02-01,4.5\nP7,2024-02-01,3\nP1,2024-02-01,x\n"
    )
    trainings = "partner_id,course_id,enrolled_at,completed_at,is_certification\n"  # 0 rows: ok
    raw = make_raw(
        tmp_path,
        portal_events=portal,
        marketing_commitments=commitments,
        leads=leads,
        feedback=feedback,
        trainings=trainings,
        truth="partner_id\nP1\n",
    )
    (raw / "notes.txt").write_text("hello")
    data = load_raw(raw)
    rs = {t: q["reason"].tolist() for t, q in data.quarantine.items()}
    assert rs["portal_events"] == [
        "occurred_at '2023-01-01' before the partner's signed_at 2024-01-10 00:00:00"
    ]
    assert rs["marketing_commitments"] == [
        "due_at '2024-01-15' before committed_at '2024-02-01'; "
        "delivered_at '2024-01-20' before committed_at '2024-02-01'"
    ]
    assert rs["leads"] == [
        "qualified_at '2024-01-30' before created_at '2024-02-01'",
        "converted_at '2024-02-05T12:00' before qualified_at '2024-02-06'",
        "partner_id is missing",
    ]
    assert data.quarantine["leads"]["_row"].tolist() == [2, 3, 4]
    assert rs["feedback"] == ["unknown partner_id 'P7'", "score 'x' is not a number"]
    assert data.tables["feedback"]["score"].tolist() == [4.5]
    assert data.report.tables["trainings"].input_rows == 0
    assert data.tables["trainings"].empty
    assert sorted(data.report.ignored) == ["notes.txt", "truth.csv"]
    assert set(data.files) == {
        "partners",
        "deals",
        "portal_events",
        "marketing_commitments",
        "leads",
        "feedback",
        "trainings",
    }
    assert all(len(f) == 64 for f in data.fingerprints.values())
    assert_accounted(data.report)
    summary = data.report.summary()
    assert "leads" in summary and "activities" in summary and "quarantine" in summary
    for name, t in data.report.tables.items():
        path = raw / "quarantine" / f"{name}.csv"
        assert path.exists() == (t.quarantined > 0)
        if t.quarantined:
            q = quarantine(raw, name)
            assert list(q.columns[-2:]) == ["_row", "reason"] and len(q) == t.quarantined


def test_typed_frames_match_contract(tmp_path):
    trainings = (
        "partner_id,course_id,enrolled_at,completed_at,is_certification\n"
        "P1,C1,2024-02-01,,TRUE\nP1,007,2024-02-01,2024-02-02,0\n"
    )
    data = load_raw(make_raw(tmp_path, trainings=trainings), write_quarantine=False)
    t = data.tables["trainings"]
    assert t["course_id"].tolist() == ["C1", "007"]  # ids stay text
    assert t["is_certification"].tolist() == [True, False]
    assert t["is_certification"].dtype == bool
    assert pd.api.types.is_datetime64_any_dtype(t["completed_at"])
    assert t["completed_at"].dt.tz is None
    assert pd.api.types.is_string_dtype(data.tables["partners"]["partner_id"])
    check_schemas(data)
    assert not (tmp_path / "raw" / "quarantine").exists()


def test_timezone_aware_parquet_is_utc(tmp_path):
    raw = make_raw(tmp_path)
    (raw / "deals.csv").unlink()
    deals = pd.DataFrame(
        {
            "deal_id": ["D1"],
            "partner_id": ["P1"],
            "created_at": pd.to_datetime(["2024-02-01 10:00"]).tz_localize("Europe/Berlin"),
            "closed_at": pd.to_datetime(["2024-03-01 00:00"], utc=True),
            "amount": [12.5],
            "status": pd.Categorical(["won"]),
        }
    )
    deals.to_parquet(raw / "deals.parquet")
    data = load_raw(raw)
    row = data.tables["deals"].iloc[0]
    assert row["created_at"] == pd.Timestamp("2024-02-01 09:00")
    assert row["closed_at"] == pd.Timestamp("2024-03-01")
    assert row["amount"] == 12.5 and row["status"] == "won"


def test_parquet_integers_beyond_2_53_are_numbers_like_their_text(tmp_path):
    """An int64 amount above 2**53 (or a uint64 near 2**64) is read like the same digits in a
    CSV file: the nearest double (a safe Arrow cast stopped validate with an internal error)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = make_raw(tmp_path)
    (raw / "deals.csv").unlink()
    for kind, big in ((pa.int64(), 2**53 + 1), (pa.uint64(), 2**64 - 1)):
        table = pa.table(
            {
                "deal_id": ["D1", "D2"],
                "partner_id": ["P1", "P1"],
                "created_at": ["2024-02-01", "2024-02-02"],
                "closed_at": ["2024-03-01", None],
                "amount": pa.array([big, 5], kind),
                "status": ["won", "open"],
            }
        )
        pq.write_table(table, raw / "deals.parquet")
        data = load_raw(raw)
        assert data.tables["deals"]["amount"].tolist() == [float(big), 5.0]
        assert data.report.tables["deals"].quarantined == 0


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_simulated_program_200_seed_3_is_clean(tmp_path, fmt):
    from partnerscore.features.config import SimulateConfig
    from partnerscore.features.simulate import simulate_program, write_tables

    tables = simulate_program(SimulateConfig(partners=200, seed=3))
    write_tables(tables, tmp_path, fmt=fmt)
    data = load_raw(tmp_path)
    assert data.report.quarantined_total == 0, data.report.summary()
    for name in TABLES:
        assert len(data.tables[name]) == len(tables[name]), name
    check_schemas(data)
    assert data.data_end <= max(
        tables[n][c.name].max()
        for n, spec in TABLES.items()
        for c in spec.columns
        if c.kind == "date"
    )


def test_no_valid_partners_still_writes_their_quarantine(tmp_path, capsys):
    partners = (
        "partner_id,partner_name,signed_at,tier,region,industry,partner_type\nP1,A,x,g,NA,s,si\n"
    )
    raw = make_raw(tmp_path, partners=partners)
    code, _, err = run_cli(raw, capsys)
    assert code == 2 and "partners.csv: no valid partner rows" in err
    assert quarantine(raw, "partners")["reason"].tolist() == ["signed_at 'x' is not a date"]


def _late_tail_twin(events: list[tuple[str, pd.Timestamp]], n_partners: int):
    """The obvious reading: each partner's newest event, the k-th newest of those (k: 1% of the
    partners, 2 to 10; within 7 days, or 45 below 200 partners)."""
    k = 0 if n_partners < 2 else max(2, min(10, n_partners // 100))
    days = 7 if n_partners >= 200 else 45
    if k < 2 or not events:
        return None
    last: dict[str, pd.Timestamp] = {}
    for pid, when in events:
        last[pid] = max(last.get(pid, when), when)
    ranked = sorted(last.values(), reverse=True)
    newest = ranked[0]
    if len(ranked) < k or ranked[k - 1] >= newest - pd.Timedelta(days=days):
        return None
    supported = ranked[k - 1]
    late = sorted(p for p, t in last.items() if t > supported + pd.Timedelta(days=days))
    return newest, supported, k, tuple(late)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 1200),
    offsets=st.lists(
        st.tuples(st.integers(0, 30), st.integers(-4000, 3), st.booleans()), max_size=60
    ),
    far=st.lists(st.tuples(st.integers(0, 30), st.integers(8, 80_000)), max_size=4),
)
def test_late_tail_equals_each_partners_newest_event(n, offsets, far):
    """The vectorised check (recent partners first, per-partner maxima only when short) equals
    the per-partner reading, with far-off dates (up to 2245) included, in programs of any size
    (below 200 partners: k = 2 within 45 days)."""
    from partnerscore.features.validate import late_tail

    end = pd.Timestamp("2026-06-30 12:00")
    ids = [f"P{i:04d}" for i in range(n)]
    partners = pd.DataFrame(
        {"partner_id": ids, "signed_at": pd.Timestamp("2020-01-01")}
    )  # the signings, years back, are observed dates too
    deals, portal = [], []
    for who, back, as_deal in offsets:
        (deals if as_deal else portal).append((ids[who % n], end + pd.Timedelta(days=back)))
    for who, ahead in far:
        portal.append((ids[who % n], end + pd.Timedelta(days=ahead)))
    tables = {
        "partners": partners.astype({"signed_at": "datetime64[ns]"}),
        "deals": pd.DataFrame(
            {
                "partner_id": [p for p, _ in deals],
                "created_at": pd.to_datetime(pd.Series([t for _, t in deals], dtype=object)),
            }
        ).astype({"created_at": "datetime64[ns]"}),
        "portal_events": pd.DataFrame(
            {
                "partner_id": [p for p, _ in portal],
                "occurred_at": pd.to_datetime(pd.Series([t for _, t in portal], dtype=object)),
            }
        ).astype({"occurred_at": "datetime64[ns]"}),
    }
    events = [(p, pd.Timestamp("2020-01-01")) for p in ids] + deals + portal
    want = _late_tail_twin(events, n)
    got = late_tail(tables)
    if want is None:
        assert got is None
    else:
        assert (got.newest, got.supported, got.k, got.partners) == want
        assert sum(got.rows.values()) == sum(
            1 for _, t in deals + portal if t > want[1] + pd.Timedelta(days=7 if n >= 200 else 45)
        )


def _large_deals(rows: int, record_3: str) -> str:
    """A deals table of ``rows`` records (~36 bytes each) whose line 3 is ``record_3``."""
    body = "".join(f"D{i},P1,2024-02-01,2024-03-01,100,won\n" for i in range(3, rows + 1))
    return (
        DEALS.splitlines(keepends=True)[0]
        + "D1,P1,2024-02-01,2024-03-01,1000,won\n"
        + (record_3 + "\n" + body)
    )


@pytest.mark.parametrize(
    "rows",
    [
        5_000,  # past the csv module's 128 KB field limit: no line ("Expected 6 columns, got 2")
        40_000,  # past Arrow's 1 MB blocks: "straddling object straddles two block boundaries"
    ],
)
def test_unclosed_quote_in_a_large_file_names_its_line(tmp_path, capsys, rows):
    raw = make_raw(tmp_path, deals=_large_deals(rows, 'D2,"P1,2024-02-01,2024-03-01,100,won'))
    code, out, err = run_cli(raw, capsys)
    assert code == 2 and out == ""
    assert "\n" not in err and "Traceback" not in err
    assert err == (
        f"error: {raw / 'deals.csv'}: cannot read file: line 3: a quote opened on this line "
        "never closes (the field would run to the end of the file)"
    )


def test_closed_quoted_line_break_in_a_large_file_reads(tmp_path, capsys):
    raw = make_raw(tmp_path, deals=_large_deals(40_000, '"D2\nbis",P1,2024-02-01,2024-03-01,1,won'))
    code, out, err = run_cli(raw, capsys)
    assert code == 0, err
    assert "40,002 physical lines hold 40,000 records + header" in out
    assert "row 2 (lines 3-4)" in out
    deals = load_raw(raw, write_quarantine=False).tables["deals"]
    assert len(deals) == 40_000 and deals["deal_id"].iloc[1] == "D2\nbis"


def _latin1_deals(rows: int, bad_row: int) -> bytes:
    """A deals table of ``rows`` rows (row 2 holds a quoted line break) with a Latin-1 'é' in
    the status of row ``bad_row``."""
    lines = ["deal_id,partner_id,created_at,closed_at,amount,status"]
    for i in range(1, rows + 1):
        deal = '"D2\nbis"' if i == 2 else f"D{i}"
        status = "w\xe9n" if i == bad_row else "won"
        lines.append(f"{deal},P1,2024-02-01,2024-03-01,{i},{status}")
    return ("\n".join(lines) + "\n").encode("latin-1")


@pytest.mark.parametrize(
    "bad_row",
    [
        3,  # in the csv module's first block: it said "(byte 148)"
        900,  # past it, in Arrow's first block: it said "(In CSV column #5: ...)", no row
        40_000,  # past Arrow's first 1 MB block
    ],
)
def test_not_utf8_names_line_row_and_column(tmp_path, capsys, bad_row):
    # the quoted line break of row 2 puts every later row one line further down
    raw = make_raw(tmp_path, deals=_latin1_deals(40_000, bad_row))
    code, out, err = run_cli(raw, capsys)
    assert code == 2 and out == ""
    assert err == (
        f"error: {raw / 'deals.csv'}: column 'status' row {bad_row}: not UTF-8 text (byte 0xE9 "
        f"at line {bad_row + 2}); save the file as UTF-8"
    )


def test_not_utf8_in_the_header_and_in_a_cutoffs_file(tmp_path, capsys):
    raw = make_raw(tmp_path, partners=b"partner_id,partner_n\xe4me\nP1,A\n")
    code, _, err = run_cli(raw, capsys)
    assert code == 2
    assert err == (
        f"error: {raw / 'partners.csv'}: line 1 (the header): not UTF-8 text (byte 0xE4); "
        "save the file as UTF-8"
    )
    # a cutoffs file is read by pandas: past the first block its message counted the byte
    # from the start of that block, with no line
    raw = make_raw(tmp_path, partners=PARTNERS)
    cutoffs = tmp_path / "cutoffs.csv"
    body = "".join(f"P1,2024-03-{1 + i % 28:02d}\n" for i in range(3_000))
    cutoffs.write_bytes(("partner_id,as_of\n" + body + "P\xe9,2024-03-01\n").encode("latin-1"))
    code = main(
        ["build", "--raw", str(raw), "--out", str(tmp_path / "f"), "--cutoffs", str(cutoffs)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == (
        f"error: --cutoffs {cutoffs}: column 'partner_id' row 3001: not UTF-8 text (byte 0xE9 at "
        "line 3002); save the file as UTF-8"
    )


def _parquet_raw(tmp_path, table: str, change) -> object:
    """The minimal folder with ``table`` as a typed Parquet file changed by ``change``."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    raw = make_raw(tmp_path)
    frame = pacsv.read_csv(raw / f"{table}.csv")
    (raw / f"{table}.csv").unlink()
    pq.write_table(change(frame), raw / f"{table}.parquet")
    return raw


def _set(frame, name, values):
    return frame.set_column(frame.schema.get_field_index(name), name, values)


def _binary_names(frame):
    import pyarrow as pa

    return _set(frame, "partner_name", pa.array([b"Acme", b"B\xe9ta"], pa.binary()))


def _struct_names(frame):
    import pyarrow as pa

    return _set(frame, "partner_name", pa.array([{"a": "Acme"}, {"a": "Beta"}]))


def _list_amounts(frame):
    import pyarrow as pa

    return _set(frame, "amount", pa.array([[1000.0], [500.0]]))


def _amount_twice(frame):
    import pyarrow as pa

    return pa.Table.from_arrays([*frame.columns, frame["amount"]], [*frame.column_names, "amount"])


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        # text stored as plain BINARY: one Latin-1 name made every cell its repr ("b'Acme'"),
        # ids included, and nothing was quarantined
        (
            "partners",
            _binary_names,
            "partners.parquet: column 'partner_name' row 2: not UTF-8 text (byte 0xE9); "
            "write the column as UTF-8 strings",
        ),
        # a struct read as its repr ("{'a': 'Acme'}"), valid
        (
            "partners",
            _struct_names,
            "partners.parquet: column 'partner_name' holds structs, not text",
        ),
        # every row quarantined as "amount '[1000.0]' is not a number"
        (
            "deals",
            _list_amounts,
            "deals.parquet: column 'amount' holds lists, not numbers",
        ),
        # Arrow's "Multiple matches for FieldRef.Name(amount) in deal_id: string ..."
        ("deals", _amount_twice, "deals.parquet: column 'amount' appears twice in the header"),
    ],
)
def test_parquet_column_types_that_are_not_the_contract(tmp_path, capsys, table, change, message):
    raw = _parquet_raw(tmp_path, table, change)
    code, out, err = run_cli(raw, capsys)
    assert code == 2 and out == ""
    assert err == f"error: {raw / (table + '.parquet')}: {message.split(': ', 1)[1]}"


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["P1", "P2", " P1"]),
            st.sampled_from(["2024-03-01", "2024-03-01 00:00:00", "2024-03-02", "", "x"]),
            st.sampled_from(["4", "4.0", "5", "", "-0"]),
        ),
        min_size=0,
        max_size=40,
    )
)
def test_repeated_rows_of_a_table_without_id_are_quarantined_naming_the_first(rows):
    """Each otherwise valid feedback row equal to an earlier one (typed values) is quarantined
    as ``duplicate of row N``, N its first valid occurrence: the slow twin compares the
    typed rows one by one. (The fast path's hashes collide here often: many repeats.)"""
    import tempfile
    from pathlib import Path

    text = "partner_id,submitted_at,score\n" + "".join(f"{p},{d},{s}\n" for p, d, s in rows)
    with tempfile.TemporaryDirectory() as tmp:
        data = load_raw(make_raw(Path(tmp), feedback=text), write_quarantine=False)
    q = data.quarantine["feedback"]
    reasons = dict(zip(q["_row"].astype(int), q["reason"], strict=True))
    seen: dict[tuple, int] = {}
    expected = {}
    for i, (p, d, s) in enumerate(rows, start=1):
        if i in reasons and not reasons[i].startswith("duplicate of row "):
            continue  # quarantined for another reason: never a first occurrence
        key = (p.strip(), pd.Timestamp(d), float(s) if s else None)
        if key in seen:
            expected[i] = f"duplicate of row {seen[key]} (same value in every contract column)"
        else:
            seen[key] = i
    got = {i: r for i, r in reasons.items() if r.startswith("duplicate of row ")}
    assert got == expected
    assert len(data.tables["feedback"]) == len(rows) - len(reasons)


def test_today_and_now_are_not_dates(tmp_path):
    """pandas reads 'today' and 'now' as the clock's time: a deal created 'today' was dated
    whenever the batch was validated, and kept (never in the future), where build --cutoffs
    refuses them."""
    deals = DEALS + "D3,P1,today,,10,open\nD4,P1,2024-02-01,now,10,won\n"
    data = load_raw(make_raw(tmp_path, deals=deals), write_quarantine=False)
    q = data.quarantine["deals"]
    reasons = dict(zip(q["_row"].astype(int), q["reason"], strict=True))
    assert reasons == {
        3: "created_at 'today' is not a date",
        4: "closed_at 'now' is not a date; status 'won' needs closed_at",
    }
    assert list(data.tables["deals"]["deal_id"]) == ["D1", "D2"]


def test_enumerations_match_in_any_case_by_the_free_categories_rule(tmp_path):
    """An enumeration's value was lowered by Arrow's utf8_lower, a free category's by
    ``case_key`` (str.lower): they disagree on the dotted capital I, which Arrow lowers to
    'i', so 'MEETİNG' was read as meeting while 'İstanbul' and 'istanbul' stay two free
    categories. One rule now: 'WON' is won, 'CALL' is call, 'MEETİNG' is no activity type."""
    deals = DEALS + "D3,P1,2024-02-01,2024-03-01,10,WON\nD4,P1,2024-02-01,2024-03-01,10,LOST\n"
    activities = (
        "activity_id,partner_id,occurred_at,activity_type,response_hours\n"
        "A1,P1,2024-03-01,CALL,1\n"
        "A2,P1,2024-03-02,MEETİNG,1\n"
        "A3,P1,2024-03-03,Meeting,1\n"
    )
    data = load_raw(make_raw(tmp_path, deals=deals, activities=activities), write_quarantine=False)
    assert list(data.tables["deals"]["status"]) == ["won", "open", "won", "lost"]
    q = data.quarantine["activities"]
    assert dict(zip(q["_row"].astype(int), q["reason"], strict=True)) == {
        2: "activity_type 'MEETİNG' not one of meeting/call/email/qbr/co_sell/joint_event"
    }
    assert list(data.tables["activities"]["activity_type"]) == ["call", "meeting"]


def test_repeated_rows_compare_free_categories_in_any_case_as_the_folds_do(tmp_path):
    """Repeats were found through Arrow's utf8_lower, spellings folded through str.lower: they
    disagree on a final sigma ('ΟΔΟΣ' and 'οδος' fold into one value, yet the rows were not
    repeats, so the fold left one event counted twice) and on the dotted capital I ('İstanbul'
    and 'istanbul' are two values, yet the second row was quarantined as a repeat)."""
    events = (
        "partner_id,occurred_at,event_type\n"
        "P1,2024-03-01 10:00:00,ΟΔΟΣ\n"
        "P1,2024-03-01 10:00:00,οδος\n"
        "P1,2024-03-01 10:00:00,İstanbul\n"
        "P1,2024-03-01 10:00:00,istanbul\n"
    )
    data = load_raw(make_raw(tmp_path, portal_events=events), write_quarantine=False)
    q = data.quarantine["portal_events"]
    assert dict(zip(q["_row"].astype(int), q["reason"], strict=True)) == {
        2: "duplicate of row 1 (same value in every contract column)"
    }
    assert sorted(data.tables["portal_events"]["event_type"]) == ["istanbul", "İstanbul", "ΟΔΟΣ"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads glibc's sigaction")
def test_a_csv_read_leaves_sigterm_to_python(tmp_path, monkeypatch):
    """pyarrow's read_csv replaced Python's SIGINT/SIGTERM handler (the C one) by its own while
    it read, forwarding a signal to the read through a helper thread: a SIGTERM landing as the
    read ended was lost when that thread had not forwarded it yet (the score job then finished
    normally; in a process that sends itself SIGTERM as each of 200 reads ends, 8 were lost).
    The handler in place while Arrow reads (seen from its reading thread) is Python's own."""
    import ctypes
    import io
    import signal

    import pyarrow.csv as pacsv

    from partnerscore.features.validate import _read_arrow

    libc = ctypes.CDLL(None, use_errno=True)

    def c_handler() -> int | None:
        action = ctypes.create_string_buffer(256)  # struct sigaction: the handler comes first
        assert libc.sigaction(signal.SIGTERM, None, action) == 0
        return ctypes.c_void_p.from_buffer(action).value

    class Source(io.RawIOBase):
        """The file read through Python, noting the handler in place at each read."""

        def __init__(self, path):
            self._file = open(path, "rb")  # noqa: SIM115 - closed with the source

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            seen.append(c_handler())
            return self._file.readinto(buffer)

        def close(self) -> None:
            self._file.close()
            super().close()

    read_csv, seen = pacsv.read_csv, []

    def read_through_python(path, *args, **kwargs):
        with Source(path) as source:
            return read_csv(source, *args, **kwargs)

    path = tmp_path / "partners.csv"
    path.write_text("partner_id,tier\nP1,gold\nP2,silver\n")
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a job's handler, as the CLI's
    try:
        pythons = c_handler()
        monkeypatch.setattr(pacsv, "read_csv", read_through_python)
        table = _read_arrow(path)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert table.num_rows == 2
    assert seen and set(seen) == {pythons}
