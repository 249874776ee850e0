"""The malformed-input corpus (tests/features/malformed/): every case's exact outcome.

Each case folder holds the table files that differ from ``_base`` (partners.csv, deals.csv) and a
``case.json`` with the expected outcome:

- ``exit`` 2 and ``error``: the CLI prints exactly one line ``error: ...`` containing ``error``;
- ``exit`` 0: ``counts`` (table -> [input, valid, quarantined]), ``quarantine`` (table -> {_row:
  exact reason}), ``reason_contains`` (table -> {_row: [substrings]}), ``clean`` (table -> column
  -> values of the typed frame), ``quarantine_values`` (table -> column -> original values),
  ``ignored`` (files listed as ignored), ``stdout_contains`` (text in the summary). Tables not named in ``quarantine``/``reason_contains``
  must quarantine nothing.

Every passing case is also checked for the accounting invariant (valid + quarantined == input, and
the valid rows are exactly the source rows whose numbers are not in the quarantine file), for the
published pandera schemas, and run again with every table given as Parquet (all-string columns):
the outcome must be identical.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import CASES, CORPUS, materialise, spec_of

from partnerscore.features.contract import TABLES, schema
from partnerscore.features.validate import load_raw, run_validate
from partnerscore.serving.cli import main

CSV_LINES_NOTE = r"; record spans lines \d+-\d+ \(a stray quote\?\)"


PASSING = [c for c in CASES if spec_of(c)["exit"] == 0]
FAILING = [c for c in CASES if spec_of(c)["exit"] != 0]


def run_cli(raw: Path, capsys) -> tuple[int, str, str]:
    code = main(["validate", str(raw)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_quarantine(raw: Path, table: str) -> pd.DataFrame:
    return pd.read_csv(raw / "quarantine" / f"{table}.csv", dtype=str, keep_default_na=False)


def records(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and data records of a CSV table as raw text (independent of the loader): empty
    lines and lines of spaces or tabs only are not records."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [r for r in reader if r and not (len(r) == 1 and not r[0].strip(" \t\r"))]


def source_rows(path: Path) -> list[dict[str, str]]:
    """Data rows of a CSV table as dicts of raw text (independent of the loader)."""
    header, rows = records(path)
    return [dict(zip(header, r, strict=False)) for r in rows]


def check_dtypes(table: str, frame: pd.DataFrame) -> None:
    """The typed-frame dtypes promised in INTERFACES.md; exactly the contract columns, in order."""
    assert list(frame.columns) == [c.name for c in TABLES[table].columns], table
    for name in frame.columns:
        dtype = frame[name].dtype
        if name in ("amount", "response_hours", "channel_reach", "market_alignment", "score") or (
            name == "product_adoption_potential"
        ):
            assert dtype == np.float64, (table, name, dtype)
        elif name == "is_certification":
            assert dtype == np.bool_, (table, name, dtype)
        elif name.endswith("_at"):
            assert pd.api.types.is_datetime64_dtype(dtype), (table, name, dtype)
            assert getattr(dtype, "tz", None) is None, (table, name, dtype)
        else:
            assert pd.api.types.is_string_dtype(dtype), (table, name, dtype)
            values = frame[name].dropna()
            assert all(isinstance(v, str) for v in values), (table, name)


def comparable(values: pd.Series) -> list:
    if pd.api.types.is_datetime64_any_dtype(values):
        return [None if pd.isna(v) else str(v) for v in values]
    if values.dtype == np.float64:
        return [None if np.isnan(v) else float(v) for v in values]
    return [
        None if (v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))) else v
        for v in values
    ]


@pytest.mark.parametrize("case", FAILING)
def test_file_level_error(case, tmp_path, capsys):
    raw = tmp_path / "raw"
    spec = materialise(case, raw)
    code, out, err = run_cli(raw, capsys)
    assert code == spec["exit"] == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith("error: ") and "Traceback" not in err
    assert spec["error"] in err, err
    expected_q = spec.get("quarantine", {})
    for table, rows in expected_q.items():
        q = read_quarantine(raw, table)
        assert dict(zip(q["_row"], q["reason"], strict=True)) == rows
    if not expected_q:
        assert not (raw / "quarantine").exists() or not any((raw / "quarantine").iterdir())


@pytest.mark.parametrize("case", PASSING)
def test_row_level_outcome(case, tmp_path, capsys):
    raw = tmp_path / "raw"
    spec = materialise(case, raw)
    code, out, err = run_cli(raw, capsys)
    assert code == 0, err
    assert err == ""
    data = load_raw(raw, write_quarantine=False)
    report = data.report
    present = {p.stem for p in raw.iterdir() if p.is_file() and p.stem in TABLES}
    assert set(report.tables) == set(data.tables) == present
    for table in report.tables:
        assert table in out  # the summary lists every table read

    for table, (n_in, n_valid, n_bad) in spec.get("counts", {}).items():
        t = report.tables[table]
        assert (t.input_rows, t.valid_rows, t.quarantined) == (n_in, n_valid, n_bad), table

    expected_rows = {**spec.get("quarantine", {}), **spec.get("reason_contains", {})}
    for table, t in report.tables.items():
        # invariant: every input row is either valid or quarantined, never both, never lost
        assert t.valid_rows + t.quarantined == t.input_rows, table
        assert len(data.tables[table]) == t.valid_rows
        qfile = raw / "quarantine" / f"{table}.csv"
        if table not in expected_rows:
            assert t.quarantined == 0, (table, read_quarantine(raw, table).to_dict("records"))
            assert not qfile.exists()
            continue
        q = read_quarantine(raw, table)
        assert len(q) == t.quarantined
        rows = q["_row"].astype(int).tolist()
        assert rows == sorted(set(rows)) and rows[0] >= 1 and rows[-1] <= t.input_rows
        assert (q["reason"].str.len() > 0).all()
        reasons = dict(zip(q["_row"], q["reason"], strict=True))
        if table in spec.get("quarantine", {}):
            assert reasons == spec["quarantine"][table], table
        else:
            wanted = spec["reason_contains"][table]
            assert set(reasons) == set(wanted), table
            for row, parts in wanted.items():
                for part in parts:
                    assert part in reasons[row], (table, row, reasons[row])
        # the valid rows are exactly the source rows not quarantined, in source order
        src = raw / f"{table}.csv"
        kept = [r for i, r in enumerate(source_rows(src), start=1) if i not in set(rows)]
        assert data.tables[table]["partner_id"].tolist() == [r["partner_id"].strip() for r in kept]
        # quarantined rows keep every original column (contract and unknown ones)
        header = list(source_rows(src)[0]) if t.input_rows else []
        assert set(header) <= set(q.columns)

    for table, columns in spec.get("quarantine_values", {}).items():
        q = read_quarantine(raw, table)
        for column, values in columns.items():
            assert q[column].tolist() == values

    for table, columns in spec.get("clean", {}).items():
        for column, values in columns.items():
            assert comparable(data.tables[table][column]) == values, (table, column)

    for text in spec.get("stdout_contains", []):
        assert text in out, out

    if "ignored" in spec:
        assert sorted(report.ignored) == spec["ignored"]
        assert not (raw / "quarantine" / "partners.csv").exists()  # stale file removed

    for table, frame in data.tables.items():
        check_dtypes(table, frame)
        schema(table).validate(frame, lazy=True)


def to_string_parquet(raw: Path) -> None:
    """Replace every CSV table in ``raw`` by a Parquet file of string columns (empty -> null)."""
    for path in sorted(raw.glob("*.csv")):
        if path.stem not in TABLES:
            continue
        header, rows = records(path)
        columns = {
            name: pa.array([r[i] if r[i] != "" else None for r in rows], type=pa.string())
            for i, name in enumerate(header)
        }
        pq.write_table(pa.table(columns), path.with_suffix(".parquet"))
        path.unlink()


@pytest.mark.parametrize("case", PASSING)
def test_parquet_gives_the_same_outcome(case, tmp_path):
    csv_dir, pq_dir = tmp_path / "csv", tmp_path / "pq"
    materialise(case, csv_dir)
    materialise(case, pq_dir)
    to_string_parquet(pq_dir)
    a = load_raw(csv_dir, tmp_path / "qa")
    b = load_raw(pq_dir, tmp_path / "qb")
    assert {k: v.file.suffix for k, v in b.report.tables.items()} == dict.fromkeys(
        b.report.tables, ".parquet"
    )
    for table, ta in a.report.tables.items():
        tb = b.report.tables[table]
        assert (ta.input_rows, ta.valid_rows, ta.quarantined) == (
            tb.input_rows,
            tb.valid_rows,
            tb.quarantined,
        )
        pd.testing.assert_frame_equal(a.tables[table], b.tables[table])
        if ta.quarantined:
            qa = pd.read_csv(tmp_path / "qa" / f"{table}.csv", dtype=str, keep_default_na=False)
            qb = pd.read_csv(tmp_path / "qb" / f"{table}.csv", dtype=str, keep_default_na=False)
            # only a CSV file has physical lines to report
            qa["reason"] = qa["reason"].str.replace(CSV_LINES_NOTE, "", regex=True)
            pd.testing.assert_frame_equal(qa, qb)
    assert a.data_end == b.data_end


def test_corpus_covers_the_required_cases():
    wanted = {
        "missing_table_deals",
        "missing_column_required_table",
        "empty_file_required",
        "garbage_bytes",
        "not_parquet",
        "duplicate_ids",
        "negative_amounts",
        "unparseable_dates",
        "unknown_partner_id",
        "before_signing",
        "out_of_range",
        "bad_enums",
        "mixed_good_bad",
        "bom_crlf",
        "timezones",
        "extra_columns",
        "stray_quote",
        "reserved_column_names",
        "future_events",
        "formula_cells",
        "tz_aware_parquet",
        "far_dates",
        "optional_columns_absent",
    }
    assert wanted <= set(CASES)
    for case in CASES:
        assert spec_of(case)["description"]


# ------------------------------------------------------------------ typed Parquet input


def write_parquet(tables: dict[str, pd.DataFrame], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(folder / f"{name}.parquet", index=False)
    return folder


def test_typed_parquet_round_trips_to_the_same_clean_frames(tmp_path):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    first = load_raw(raw)
    again = load_raw(write_parquet(first.tables, tmp_path / "typed"))
    assert again.report.quarantined_total == 0
    for name, frame in first.tables.items():
        pd.testing.assert_frame_equal(frame, again.tables[name])


def test_typed_parquet_native_types(tmp_path):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    base = load_raw(raw, write_quarantine=False).tables
    partners = base["partners"].assign(
        signed_at=base["partners"]["signed_at"].astype("datetime64[s]")
    )
    berlin = pd.to_datetime(
        ["2024-02-01 10:00", "2024-03-01 12:00", "2024-01-10 00:30"]
    ).tz_localize("Europe/Berlin")
    deals = pd.DataFrame(
        {
            "deal_id": ["D1", "D2", "D3"],
            "partner_id": ["P1", "P2", "P1"],
            "created_at": berlin,
            "closed_at": pd.Series([pd.NaT] * 3, dtype="datetime64[us, UTC]"),
            "amount": np.array([5, 0, 7], dtype="int64"),
            "status": ["open", "open", "open"],
        }
    )
    trainings = pa.table(
        {
            "partner_id": ["P1", "P1"],
            "course_id": ["C1", "C2"],
            "enrolled_at": pa.array([pd.Timestamp("2024-02-01").date()] * 2, type=pa.date32()),
            "completed_at": pa.array([pd.Timestamp("2024-02-03"), None], type=pa.timestamp("ms")),
            "is_certification": [True, False],
        }
    )
    folder = write_parquet({"partners": partners, "deals": deals}, tmp_path / "typed")
    pq.write_table(trainings, folder / "trainings.parquet")
    data = load_raw(folder)
    d = data.tables["deals"]
    # Berlin is UTC+1 in winter: the third deal (00:30 local) is 23:30 UTC the day before signing
    assert d["created_at"].tolist() == [
        pd.Timestamp("2024-02-01 09:00"),
        pd.Timestamp("2024-03-01 11:00"),
    ]
    assert d["amount"].tolist() == [5.0, 0.0] and d["amount"].dtype == np.float64
    q = read_quarantine(folder, "deals")
    assert q["deal_id"].tolist() == ["D3"]
    assert q["reason"].iloc[0].startswith("created_at '2024-01-09 23:30:00")
    assert q["reason"].iloc[0].endswith("before the partner's signed_at 2024-01-10 00:00:00")
    t = data.tables["trainings"]
    assert t["enrolled_at"].tolist() == [pd.Timestamp("2024-02-01")] * 2
    assert t["is_certification"].tolist() == [True, False]
    for name, frame in data.tables.items():
        check_dtypes(name, frame)
        schema(name).validate(frame, lazy=True)


def test_parquet_missing_column_and_header_only_required(tmp_path, capsys):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    tables = load_raw(raw, write_quarantine=False).tables
    folder = write_parquet(
        {"partners": tables["partners"], "deals": tables["deals"].drop(columns="status")},
        tmp_path / "a",
    )
    code, _, err = run_cli(folder, capsys)
    assert code == 2 and "deals.parquet: missing required column 'status'" in err
    folder = write_parquet(
        {"partners": tables["partners"], "deals": tables["deals"].iloc[:0]}, tmp_path / "b"
    )
    code, _, err = run_cli(folder, capsys)
    assert code == 2 and "deals.parquet: no data rows" in err


def test_truncated_real_parquet(tmp_path, capsys):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    tables = load_raw(raw, write_quarantine=False).tables
    folder = write_parquet(tables, tmp_path / "p")
    blob = (folder / "deals.parquet").read_bytes()
    (folder / "deals.parquet").write_bytes(blob[: len(blob) // 2])
    code, _, err = run_cli(folder, capsys)
    assert code == 2 and err.count("\n") == 1 and "deals.parquet: cannot read file" in err


# ------------------------------------------------------------------ quarantine files and report


def test_quarantine_rewritten_each_run_and_stale_files_removed(tmp_path):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    load_raw(raw)
    assert len(read_quarantine(raw, "deals")) == 3
    good = [r for i, r in enumerate(source_rows(raw / "deals.csv"), start=1) if i != 4]
    pd.DataFrame(good).to_csv(raw / "deals.csv", index=False)
    load_raw(raw)
    assert read_quarantine(raw, "deals")["deal_id"].tolist() == ["D5", "D6"]  # rewritten
    shutil.copy(CORPUS / "_base" / "deals.csv", raw / "deals.csv")
    report = run_validate(raw)
    assert report.quarantined_total == 0
    assert not (raw / "quarantine" / "deals.csv").exists()


def test_quarantine_dir_and_no_write(tmp_path):
    raw = tmp_path / "raw"
    materialise("mixed_good_bad", raw)
    data = load_raw(raw, write_quarantine=False)
    assert data.report.quarantined_total == 3
    assert not (raw / "quarantine").exists()
    load_raw(raw, tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "deals.csv").exists()
    assert not (raw / "quarantine").exists()


def test_summary_lists_counts_top_reasons_and_where(tmp_path):
    raw = tmp_path / "raw"
    materialise("out_of_range", raw)
    text = run_validate(raw).summary()
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("partners"))
    assert row.split()[1:4] == ["9", "4", "5"]
    assert "market_alignment" in row
    feedback = next(line for line in lines if line.startswith("feedback"))
    assert feedback.split()[1:4] == ["4", "1", "3"]
    assert str(raw / "quarantine") in text


def test_fingerprints_files_and_data_end(tmp_path):
    raw = tmp_path / "raw"
    materialise("dates_out_of_order", raw)
    data = load_raw(raw, write_quarantine=False)
    assert data.files["deals"] == raw / "deals.csv"
    assert set(data.fingerprints) == set(data.files) == set(data.tables)
    assert all(len(v) == 64 for v in data.fingerprints.values())
    # latest observed date in the clean tables: deal D1 closed 2024-03-01 (a commitment's due_at
    # is a plan, not an observation, and does not move the data end)
    assert data.data_end == pd.Timestamp("2024-03-01")


def test_simulated_program_is_clean_and_typed(raw_dir):
    data = load_raw(raw_dir, write_quarantine=False)
    assert data.report.quarantined_total == 0
    assert set(data.tables) == set(TABLES)
    assert "truth.csv" in data.report.ignored
    for name, t in data.report.tables.items():
        assert t.valid_rows == t.input_rows > 0, name
        check_dtypes(name, data.tables[name])
        schema(name).validate(data.tables[name], lazy=True)
    ends = [
        frame[c].max()
        for name, frame in data.tables.items()
        for c in frame.columns
        if c.endswith("_at") and c != "due_at"
    ]
    assert data.data_end == max(ends)


def test_the_readme_counts_the_corpus():
    """The README names how many folder cases the corpus has (it said 46 after three were
    added): the count it gives is the number of case folders."""
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    said = re.findall(r"`tests/features/malformed/` \((\d+) folder cases", readme)
    assert said and all(int(n) == len(CASES) for n in said), (said, len(CASES))
