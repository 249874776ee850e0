"""The readers of a scores file take the Parquet dataset folder ``score --engine spark`` writes.

``score --engine spark --out scores.parquet`` writes a folder of part files (one per partner
group, each sorted by partner) where the pandas job writes one file. ``report``, ``forecast``,
``monitor --scores``, ``experiment assign`` and ``whatif --policy`` refused it ("is a folder,
expected a file") until 2026-12-06. Here a pandas scores file is split into such a folder
(no Spark: ``test_spark_engine.py`` compares the readers on a real Spark output): the readers
give the same rows and results, a row is named by its part file and row within it, a folder
that is no dataset is one line, and other inputs still refuse folders.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from partnerscore.features.core import (
    PartnerscoreError,
    check_companions,
    companion_manifest,
    publish_listed,
    publishing_mark,
    read_frame,
    write_frame_atomic,
)
from partnerscore.serving.report import read_scores


def split_into_parts(frame: pd.DataFrame, folder: Path, parts: int = 3) -> list[Path]:
    """``frame`` as a folder of ``parts`` part files, the Spark engine's layout.

    Partners go to parts round-robin in partner order: each part sorted by partner, the
    parts together not (as the engine's hash groups). Spark's marker files beside them.
    """
    frame = frame.sort_values("partner_id", kind="stable").reset_index(drop=True)
    folder.mkdir(parents=True)
    paths = []
    for k in range(parts):
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(pa.Table.from_pandas(frame.iloc[k::parts], preserve_index=False), path)
        paths.append(path)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / ".part-00000.parquet.crc").write_bytes(b"\x00crc")
    return paths


@pytest.fixture(scope="module")
def both(scored_dir, tmp_path_factory):
    """The session's scores as one Parquet file and as a folder of three part files."""
    root, cfg = scored_dir
    frame = read_frame(root / "scores.csv")
    here = tmp_path_factory.mktemp("folder")
    single = write_frame_atomic(frame, here / "file" / "scores.parquet")
    folder = here / "spark" / "scores.parquet"
    split_into_parts(pd.read_parquet(single), folder)
    return single, folder, cfg, root


def test_a_scores_folder_is_read_as_its_single_file(both):
    from partnerscore.serving.monitor import _batch_scores

    single, folder, _, _ = both
    expected = read_scores(single)
    assert not pd.read_parquet(folder)["partner_id"].is_monotonic_increasing  # parts apart
    pd.testing.assert_frame_equal(read_scores(folder), expected)
    cut = pd.Timestamp(expected["as_of"].iloc[0])
    pd.testing.assert_frame_equal(_batch_scores(folder, cut), _batch_scores(single, cut))


@pytest.mark.parametrize("phased", [False, True])
def test_forecast_of_a_scores_folder_equals_its_single_files(both, tmp_path, phased):
    from partnerscore.serving import api
    from partnerscore.serving.forecast import run_forecast

    single, folder, cfg, _ = both
    got = {}
    for name, scores in (("file", single), ("folder", folder)):
        out = tmp_path / f"{name}.csv"
        result = run_forecast(cfg, scores, out, ("tier", "region"), phased=phased)
        got[name] = out.read_bytes()
        assert result.partners > 100
        pd.testing.assert_frame_equal(api.forecast(scores, phased=phased), result.table)
    assert got["folder"] == got["file"]


def test_assign_and_whatif_of_a_scores_folder_equal_its_single_files(both, tmp_path):
    from partnerscore.serving.experiment import run_assign
    from partnerscore.serving.whatif import run_whatif_policy

    single, folder, cfg, _ = both
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"revenue_weight": 0.6}}))
    tables, moves = {}, {}
    for name, scores in (("file", single), ("folder", folder)):
        out = tmp_path / f"{name}.csv"
        run_assign(
            scores, "e", ("control", "treatment"), out, cfg, registry=tmp_path / f"{name}r.csv"
        )
        tables[name] = out.read_bytes()
        moves[name] = run_whatif_policy(cfg, policy, scores, tmp_path / f"{name}-w.csv").moves
        assert (tmp_path / f"{name}-w.csv").exists()
    assert tables["folder"] == tables["file"]
    pd.testing.assert_frame_equal(moves["folder"], moves["file"])
    assert (tmp_path / "folder-w.csv").read_bytes() == (tmp_path / "file-w.csv").read_bytes()


def _folder_with(both, tmp_path, change) -> Path:
    """A copy of the scores folder with one part file changed by ``change(frame)``."""
    _, folder, _, _ = both
    copy = tmp_path / "scores.parquet"
    shutil.copytree(folder, copy)
    part = copy / "part-00001.parquet"
    frame = pd.read_parquet(part)
    frame = change(frame)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), part)
    return copy


def _bad_as_of(frame: pd.DataFrame) -> pd.DataFrame:
    frame["as_of"] = frame["as_of"].astype(str)
    frame.loc[2, "as_of"] = "02/01/2026"
    return frame


def test_a_row_of_a_scores_folder_is_named_by_its_part_file_and_row(both, tmp_path):
    """A folder's rows are read in partner order, not part by part: a message naming its row
    (the 1-based data record in the file for a file) names the part file and its row."""
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.monitor import _batch_scores

    _, _, cfg, _ = both
    folder = _folder_with(both, tmp_path, _bad_as_of)
    said = f"{folder}/part-00001.parquet: column 'as_of' row 3: '02/01/2026' is not a date"
    with pytest.raises(PartnerscoreError) as info:
        read_scores(folder)
    assert str(info.value) == said
    with pytest.raises(PartnerscoreError) as info:
        run_forecast(cfg, folder, tmp_path / "f.csv", ("tier",))
    assert str(info.value) == said
    with pytest.raises(PartnerscoreError) as info:
        _batch_scores(folder, pd.Timestamp("2026-03-01"))
    assert str(info.value) == said


def test_a_partner_twice_in_a_scores_folder_names_both_parts(both, tmp_path):
    _, folder, cfg, _ = both
    part = pd.read_parquet(folder / "part-00000.parquet")
    at = 4 + int(part["out_of_scope"].iloc[4:].to_numpy().argmin())  # summed by forecast
    first = part.iloc[[at]]
    copy = _folder_with(both, tmp_path, lambda frame: pd.concat([frame, first]))
    rows = len(pd.read_parquet(copy / "part-00001.parquet"))
    pid = first["partner_id"].iloc[0]
    with pytest.raises(PartnerscoreError) as info:
        read_scores(copy)
    assert str(info.value).startswith(
        f"{copy}: partner '{pid}' is scored in {copy}/part-00000.parquet row {at + 1} and "
        f"{copy}/part-00001.parquet row {rows}, both as of 2026-03-01"
    )
    from partnerscore.serving.forecast import run_forecast

    with pytest.raises(PartnerscoreError) as info:
        run_forecast(cfg, copy, tmp_path / "f.csv", ("tier",))
    assert str(info.value).startswith(
        f"{copy}: partner '{pid}' is scored in {copy}/part-00000.parquet row {at + 1} and "
        f"{copy}/part-00001.parquet row {rows} (as of 2026-03-01 and 2026-03-01)"
    )


def _no_parts(folder: Path) -> None:
    (folder / "_SUCCESS").write_bytes(b"")


def _csv_inside(folder: Path) -> None:
    (folder / "part-00000.parquet").write_bytes(b"")
    (folder / "scores.csv").write_text("partner_id\nP1\n")


def _subfolder(folder: Path) -> None:
    (folder / "part-00000.parquet").write_bytes(b"")
    (folder / "tier=gold").mkdir()


def _text_part(folder: Path) -> None:
    (folder / "part-00000.parquet").write_text("partner_id,score\nP1,3\n")


def _empty_part(folder: Path) -> None:
    (folder / "part-00000.parquet").write_bytes(b"")


NOT_A_DATASET = {
    "empty": (
        lambda folder: None,
        "{f}: empty folder (expected a file, or a Parquet dataset folder of *.parquet part files)",
    ),
    "no_parts": (_no_parts, "{f}: no Parquet part files (*.parquet) in the folder, only _SUCCESS"),
    "csv_inside": (
        _csv_inside,
        "{f}/scores.csv: not a Parquet part file (a Parquet dataset folder holds only *.parquet "
        "part files)",
    ),
    "subfolder": (
        _subfolder,
        "{f}/tier=gold: a folder inside a Parquet dataset folder (expected only its *.parquet "
        "part files)",
    ),
    "text_part": (
        _text_part,
        "{f}/part-00000.parquet: cannot read file: not a Parquet file (no Parquet footer; CSV "
        "text named .parquet?)",
    ),
    "empty_part": (_empty_part, "{f}/part-00000.parquet: empty file"),
}


@pytest.mark.parametrize("case", sorted(NOT_A_DATASET))
def test_a_folder_that_is_no_parquet_dataset_is_one_line(case, tmp_path, capsys):
    from partnerscore.serving.cli import main

    make, message = NOT_A_DATASET[case]
    folder = tmp_path / "scores.parquet"
    folder.mkdir()
    make(folder)
    with pytest.raises(PartnerscoreError) as info:
        read_scores(folder)
    assert str(info.value) == message.format(f=folder)
    for argv in (
        ["forecast", "--scores", str(folder), "--out", str(tmp_path / "f.csv")],
        ["report", "--scores", str(folder), "--out", str(tmp_path / "r")],
    ):
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == "error: --scores " + message.format(f=folder), err


def test_parts_with_other_columns_are_one_line_naming_the_part(both, tmp_path):
    folder = _folder_with(both, tmp_path, lambda frame: frame.drop(columns=["tier"]))
    with pytest.raises(PartnerscoreError) as info:
        read_scores(folder)
    assert str(info.value) == (
        f"{folder}/part-00001.parquet: its columns are not part-00000.parquet's (without "
        "'tier'): the parts of a dataset folder hold the same columns"
    )
    other = tmp_path / "other"
    other.mkdir()
    folder = _folder_with(both, other, lambda frame: frame.assign(score=frame["score"].astype(str)))
    with pytest.raises(PartnerscoreError) as info:
        read_scores(folder)
    assert str(info.value) == (
        f"{folder}/part-00001.parquet: column 'score' is string, double in part-00000.parquet: "
        "the parts of a dataset folder hold the same columns"
    )


def test_inputs_other_than_scores_still_refuse_a_folder(both, tmp_path):
    """A dataset folder is taken where a scores file is expected only: a partners file, notes,
    a config or a feature table given a folder stop as before."""
    from partnerscore.serving.report import read_notes, read_partner_ids

    _, folder, _, _ = both
    for read in (read_frame, read_notes, read_partner_ids):
        with pytest.raises(PartnerscoreError, match=r"is a folder, expected a file$"):
            read(folder)


def test_a_scores_folders_interrupted_publish_is_refused(both, tmp_path):
    """``companion_manifest`` of the folder is the manifest the Spark engine publishes it
    under (``scores.manifest.json`` beside it); with the publishing mark there, a part that
    is not the listed one is refused by every reader, naming it."""
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.spark_engine import _swap

    _, folder, cfg, _ = both
    copy = tmp_path / "out" / "scores.parquet"
    shutil.copytree(folder, copy)
    manifest = companion_manifest(copy)
    assert manifest == tmp_path / "out" / "scores.manifest.json"
    assert companion_manifest(f"{copy}/") == manifest
    fresh = tmp_path / "out" / ".scores.parquet.new"
    shutil.copytree(copy, fresh)
    publish_listed([], {"rows": 1}, manifest, folders=[(fresh, copy)], swap=_swap)
    listed = json.loads(manifest.read_text())["files"]
    assert "scores.parquet/part-00001.parquet" in listed
    check_companions(copy)
    publishing_mark(manifest).touch()  # a run killed after swapping its folder in
    part = copy / "part-00001.parquet"
    pq.write_table(pq.read_table(part).slice(1), part)
    with pytest.raises(PartnerscoreError, match=r"part-00001\.parquet: not the file .* mixes"):
        read_scores(copy)
    with pytest.raises(PartnerscoreError, match=r"part-00001\.parquet: not the file .* mixes"):
        run_forecast(cfg, copy, tmp_path / "f.csv", ("tier",))


def _part_said(part: Path, parts: int = 3) -> str:
    return (
        f"{part}: one part file of the Parquet dataset folder {part.parent}, which holds "
        f"{parts} (`score --engine spark` writes one per partner group, each with only some of "
        "the batch's partners): give the folder"
    )


def test_a_part_file_of_a_scores_folder_is_refused_naming_the_folder(both, tmp_path, capsys):
    """A part given alone was read as a whole scores file: a third of the partners (report
    removes the pages of partners no longer in its scores), and its interrupted-publish check
    looked for a ``part-00001.manifest.json`` beside it, so it passed whatever the folder's
    state. Every reader of a scores file now refuses it in one line naming the folder to
    give."""
    from partnerscore.serving import api
    from partnerscore.serving.cli import main
    from partnerscore.serving.experiment import run_assign
    from partnerscore.serving.forecast import run_forecast
    from partnerscore.serving.monitor import _batch_scores
    from partnerscore.serving.whatif import run_whatif_policy

    _, folder, cfg, _ = both
    part = folder / "part-00001.parquet"
    said = _part_said(part)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"revenue_weight": 0.6}}))
    out = tmp_path / "out"
    readers = {
        "report": lambda: read_scores(part),
        "forecast": lambda: run_forecast(cfg, part, out / "f.csv", ("tier",)),
        "api.forecast": lambda: api.forecast(part, by="tier"),
        "monitor": lambda: _batch_scores(part, pd.Timestamp("2026-03-01")),
        "assign": lambda: run_assign(
            # its registry's lock file is made first, whatever the input: kept out of ``out``
            part,
            "e",
            ("control", "treatment"),
            out / "a.csv",
            cfg,
            registry=tmp_path / "r.csv",
        ),
        "whatif": lambda: run_whatif_policy(cfg, policy, part, out / "w.csv"),
    }
    for name, read in readers.items():
        with pytest.raises(PartnerscoreError) as info:
            read()
        assert str(info.value) == said, name
    for argv in (
        ["forecast", "--scores", str(part), "--out", str(out / "f.csv")],
        ["report", "--scores", str(part), "--out", str(out / "r")],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == f"error: --scores {said}"
    assert not out.exists()
    # a link to the part is refused as the part is; the folder itself is read
    link = tmp_path / "link.parquet"
    link.symlink_to(part)
    with pytest.raises(PartnerscoreError, match="give the folder$"):
        read_scores(link)
    assert len(read_scores(folder)) == len(read_scores(both[0]))


def test_a_part_of_a_half_published_scores_folder_is_refused(both, tmp_path):
    """A part of a folder whose publish was interrupted (the mark beside its manifest, a part
    not the listed one) was read silently when given alone: it is refused as a part, and the
    folder, given instead, by the interrupted-publish check."""
    from partnerscore.serving.spark_engine import _swap

    _, folder, _, _ = both
    copy = tmp_path / "out" / "scores.parquet"
    shutil.copytree(folder, copy)
    fresh = tmp_path / "out" / ".scores.parquet.new"
    shutil.copytree(copy, fresh)
    manifest = companion_manifest(copy)
    publish_listed([], {"rows": 1}, manifest, folders=[(fresh, copy)], swap=_swap)
    publishing_mark(manifest).touch()  # a run killed after swapping its folder in
    part = copy / "part-00001.parquet"
    pq.write_table(pq.read_table(part).slice(1), part)
    with pytest.raises(PartnerscoreError) as info:
        read_scores(part)
    assert str(info.value) == _part_said(part)
    with pytest.raises(PartnerscoreError, match=r"part-00001\.parquet: not the file .* mixes"):
        read_scores(copy)


def test_a_scores_file_in_a_folder_that_is_no_dataset_is_read(both, tmp_path):
    """Only a part of a dataset folder (named ``*.parquet``, holding only part files) is
    refused: a scores file in a folder of another name, or in a ``*.parquet`` folder beside its
    rejects and manifest (``score --out results.parquet/scores.parquet``), is read."""
    single, folder, _, _ = both
    expected = read_scores(single)
    for where in (tmp_path / "scores", tmp_path / "results.parquet"):
        where.mkdir()
        path = where / "scores.parquet"
        shutil.copy(single, path)
        if where.name.endswith(".parquet"):
            (where / "scores.rejects.csv").write_text("partner_id,as_of,reason\n")
        pd.testing.assert_frame_equal(read_scores(path), expected)
    lone = tmp_path / "lone.parquet"  # one part alone in its folder: still a part
    lone.mkdir()
    shutil.copy(folder / "part-00000.parquet", lone / "part-00000.parquet")
    with pytest.raises(PartnerscoreError) as info:
        read_scores(lone / "part-00000.parquet")
    assert str(info.value) == _part_said(lone / "part-00000.parquet", 1)
