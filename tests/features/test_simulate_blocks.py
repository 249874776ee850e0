"""A program larger than BLOCK_PARTNERS is simulated and written in independent blocks."""

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partnerscore.features import simulate as sim
from partnerscore.features.config import BuildConfig, SimulateConfig
from partnerscore.features.contract import TABLES
from partnerscore.features.pipeline import build_labels
from partnerscore.features.simulate import run_simulate, simulate_program, write_tables
from partnerscore.features.validate import run_validate

BLOCK = 1000
BLOCKED = SimulateConfig(partners=2500, seed=13)  # blocks of 834, 833 and 833 partners
ID_PATTERNS = {"P": r"P\d{5}", "D": r"D\d{7}", "A": r"A\d{8}", "M": r"M\d{7}", "L": r"L\d{7}"}
# sha256 of the CSV files (name, bytes) of SimulateConfig(partners=300, seed=7), as written
# before programs were blocked: a program of at most BLOCK_PARTNERS must not change
SMALL_CSV_SHA256 = "dfcb4e27907526d7d87d79742118732989419e20b1db4392758d7fce42a2d509"


@pytest.fixture()
def small_blocks(monkeypatch):
    monkeypatch.setattr(sim, "BLOCK_PARTNERS", BLOCK, raising=False)


@pytest.fixture(scope="module")
def blocked_tables():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sim, "BLOCK_PARTNERS", BLOCK, raising=False)
        return simulate_program(BLOCKED)


def _csv_digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_block_constant_keeps_the_documented_sizes_whole():
    assert sim.BLOCK_PARTNERS >= 100_000
    assert sim.block_sizes(100_000) == [100_000]
    assert sim.block_sizes(1_000_000) == [100_000] * 10
    assert sim.block_sizes(250_001) == [83_334, 83_334, 83_333]


def test_program_up_to_a_block_is_unchanged(tmp_path, monkeypatch):
    cfg = SimulateConfig(partners=300, seed=7)
    run_simulate(cfg, tmp_path / "default")
    assert _csv_digest(tmp_path / "default") == SMALL_CSV_SHA256
    monkeypatch.setattr(sim, "BLOCK_PARTNERS", 300, raising=False)  # exactly one block
    run_simulate(cfg, tmp_path / "edge")
    assert _csv_digest(tmp_path / "edge") == SMALL_CSV_SHA256


def _numbered_on(tables, start):
    """``tables`` with every id numbered on from ``start`` (prefix -> ids used before)."""

    def shift(ids):
        return ids.map(lambda i: f"{i[0]}{int(i[1:]) + start[i[0]]:0{len(i) - 1}d}")

    id_columns = {"partner_id", *(column for column, _ in sim.ID_COLUMNS.values())}
    return {
        name: frame.assign(**{c: shift(frame[c]) for c in frame.columns if c in id_columns})
        for name, frame in tables.items()
    }


def test_blocks_are_independent_sub_programs(blocked_tables):
    """Block b is the program's constants simulated for its partners from the seed's b-th
    spawned stream, with its ids numbered on from the earlier blocks (nothing else changes)."""
    sizes = [834, 833, 833]
    streams = np.random.SeedSequence(BLOCKED.seed).spawn(len(sizes))
    start = dict.fromkeys(ID_PATTERNS, 0)
    parts = []
    for size, stream in zip(sizes, streams, strict=True):
        alone = sim._simulate(BLOCKED, size, np.random.default_rng(stream))
        parts.append(_numbered_on(alone, start))
        for table, (_, prefix) in sim.ID_COLUMNS.items():
            start[prefix] += len(alone[table])
    for name, frame in blocked_tables.items():
        expected = pd.concat([part[name] for part in parts], ignore_index=True)
        pd.testing.assert_frame_equal(frame, expected, obj=name)
    # the sub-program simulator is the unblocked one: the seed's own stream replays it
    whole = simulate_program(SimulateConfig(partners=834, seed=BLOCKED.seed))
    again = sim._simulate(BLOCKED, 834, np.random.default_rng(BLOCKED.seed))
    for name, frame in whole.items():
        pd.testing.assert_frame_equal(again[name], frame, obj=name)


def test_blocked_ids_unique_well_formed_and_keys_hold(blocked_tables):
    for table, (column, prefix) in sim.ID_COLUMNS.items():
        ids = blocked_tables[table][column]
        assert ids.str.fullmatch(ID_PATTERNS[prefix]).all(), table
        numbers = np.sort(ids.str[1:].astype(int).to_numpy())
        assert (numbers == np.arange(1, len(ids) + 1)).all(), table  # unique and contiguous
    partner_ids = set(blocked_tables["partners"]["partner_id"])
    assert partner_ids == {f"P{i:05d}" for i in range(1, BLOCKED.partners + 1)}
    for name, frame in blocked_tables.items():
        if name != "partners":
            assert frame["partner_id"].isin(partner_ids).all(), name
    truth = blocked_tables["truth"]
    assert not truth.duplicated(["partner_id", "age_days"]).any()
    # signing order holds within a block only
    signed = blocked_tables["partners"]["signed_at"]
    assert signed.iloc[:834].is_monotonic_increasing and not signed.is_monotonic_increasing


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streamed_files_equal_writing_the_concatenation(
    blocked_tables, small_blocks, tmp_path, fmt
):
    assert not blocked_tables["partners"]["signed_at"].is_monotonic_increasing  # 3 blocks
    result = run_simulate(BLOCKED, tmp_path / "streamed", fmt=fmt)
    whole = write_tables(blocked_tables, tmp_path / "whole", fmt=fmt)
    assert result.rows == {name: len(frame) for name, frame in blocked_tables.items()}
    assert sorted(p.name for p in (tmp_path / "streamed").iterdir()) == sorted(
        p.name for p in whole.values()
    )  # no temporaries left
    for name, path in result.paths.items():
        if fmt == "csv":
            assert path.read_bytes() == whole[name].read_bytes(), name
        else:
            assert pq.read_schema(path).equals(pq.read_schema(whole[name])), name
            assert pq.ParquetFile(path).metadata.num_row_groups == 3, name
            pd.testing.assert_frame_equal(
                pd.read_parquet(path), pd.read_parquet(whole[name]), obj=name
            )


def test_parquet_schema_fixed_by_the_first_block(tmp_path):
    """A text column all missing (or a table empty) in a block keeps its text type."""
    empty = pd.DataFrame({"name": np.array([], dtype=object), "x": np.array([], dtype=float)})
    blocks = [
        {"t": pd.DataFrame({"name": [None, None], "x": [1.0, np.nan]})},
        {"t": empty},
        {"t": pd.DataFrame({"name": pd.Series(["a", None], dtype="str"), "x": [2.0, 3.0]})},
    ]
    from partnerscore.features.simulate import write_blocks

    paths, rows = write_blocks(blocks, tmp_path, fmt="parquet")
    assert rows == {"t": 4}
    assert pq.read_schema(paths["t"]).field("name").type in (pa.string(), pa.large_string())
    back = pd.read_parquet(paths["t"])
    assert pd.api.types.is_string_dtype(back["name"])
    assert back["name"].isna().tolist() == [True, True, False, True]
    assert back["name"].iloc[2] == "a"
    np.testing.assert_array_equal(back["x"].to_numpy(), [1.0, np.nan, 2.0, 3.0])


def test_blocked_program_has_the_same_distribution(blocked_tables):
    """Tier shares and mean true revenue of the blocked program agree with an unblocked one of
    the same size (fixed seeds; tolerance 4 standard errors); its truth stays calibrated."""
    whole = simulate_program(BLOCKED)  # BLOCK_PARTNERS unpatched: one block
    assert not blocked_tables["partners"].equals(whole["partners"])
    n = BLOCKED.partners
    for tier in sim.TIERS:
        a = (blocked_tables["partners"]["tier"] == tier).mean()
        b = (whole["partners"]["tier"] == tier).mean()
        se = np.sqrt(a * (1 - a) / n + b * (1 - b) / n)
        assert abs(a - b) < 4 * se, tier
    for age in (90, 180):
        a = blocked_tables["truth"].query("age_days == @age")["true_expected_revenue"]
        b = whole["truth"].query("age_days == @age")["true_expected_revenue"]
        se = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) < 4 * se, age
    end = pd.Timestamp(BLOCKED.end_date) + pd.Timedelta(days=1)
    truth = blocked_tables["truth"]
    truth = truth[truth["as_of"] + pd.Timedelta(days=BLOCKED.horizon_days) < end]
    truth = truth.reset_index(drop=True)
    contract = {k: v for k, v in blocked_tables.items() if k != "truth"}
    labels = build_labels(contract, truth[["partner_id", "as_of"]], BuildConfig())
    p = truth["true_engagement_prob"].to_numpy()
    se = np.sqrt(np.sum(p * (1 - p))) / len(p)
    assert abs(labels["label_engaged"].mean() - p.mean()) < 4 * se


def test_validate_accepts_a_blocked_program(small_blocks, tmp_path):
    run_simulate(BLOCKED, tmp_path, fmt="csv")
    signed = pd.read_csv(tmp_path / "partners.csv")["signed_at"]
    assert not signed.is_monotonic_increasing  # blocked: signing order holds within a block
    report = run_validate(tmp_path)
    assert set(TABLES) <= set(report.tables)
    assert report.quarantined_total == 0
    assert report.tables["partners"].valid_rows == BLOCKED.partners
