import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partnerscore.features import core
from partnerscore.features.core import (
    FrozenConfig,
    PartnerscoreError,
    csv_lines,
    file_fingerprint,
    quoted,
    read_frame,
    stable_hash,
    visible,
    write_frame_atomic,
    write_text_atomic,
)


class _Cfg(FrozenConfig):
    a: int = 1
    b: str = "x"


def test_error_message_is_one_line():
    err = PartnerscoreError("deals.csv: column 'amount'\n row 3:  negative")
    assert str(err) == "deals.csv: column 'amount' row 3: negative"
    assert err.exit_code == 2


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("P001", "'P001'"),
        ("Zürich Systèmes", "'Zürich Systèmes'"),  # printable non-ASCII text is unchanged
        ("e\u0301 a b", "'e\u0301 a b'"),  # a combining accent and plain spaces print
        ("C:\\temp\\n", "'C:\\temp\\n'"),  # printable backslashes too
        ("P001\u200b", "'P001\\u200b'"),  # zero-width space
        ("\ufeffP001", "'\\ufeffP001'"),  # byte order mark
        ("a\x00b", "'a\\x00b'"),
        ("a\tb\r\n", "'a\\tb\\r\\n'"),
        ("1\xa0000", "'1\\xa0000'"),  # a no-break space reads as a space
        ("\x7f\x85\u2028", "'\\x7f\\x85\\u2028'"),
        ("a\\x00\u200b", "'a\\\\x00\\u200b'"),  # beside an escape, a backslash is doubled
        (12.5, "'12.5'"),
    ],
)
def test_quoted_shows_invisible_characters_as_escapes(value, shown):
    assert quoted(value) == shown
    if visible(str(value)) != str(value):  # Python's own escapes: the text reads back
        assert shown[1:-1].encode("ascii").decode("unicode_escape") == str(value)
    # and survives the one-line error (which collapses runs of whitespace)
    assert str(PartnerscoreError(f"x {shown} y")) == f"x {shown} y"


def test_quoted_cuts_before_escaping():
    assert quoted("abc\u200bdef", 4) == "'abc\\u200b'"
    assert quoted("x" * 70, 60) == "'" + "x" * 60 + "'"


def test_frozen_config_rejects_unknown_and_mutation():
    with pytest.raises(ValueError):
        _Cfg(c=3)
    cfg = _Cfg()
    with pytest.raises(ValueError):
        cfg.a = 2


def test_stable_hash_depends_on_values_not_key_order():
    assert stable_hash({"a": 1, "b": 2}) == stable_hash({"b": 2, "a": 1})
    assert stable_hash(_Cfg()) != stable_hash(_Cfg(a=2))
    assert len(stable_hash(_Cfg())) == 12


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_frame_atomic_round_trip(tmp_path, suffix):
    frame = pd.DataFrame({"partner_id": ["P1", "P2"], "score": [1.5, 2.5]})
    path = write_frame_atomic(frame, tmp_path / "sub" / f"scores{suffix}")
    back = read_frame(path)
    assert back["partner_id"].tolist() == ["P1", "P2"]
    assert back["score"].tolist() == [1.5, 2.5]
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_write_frame_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "scores.csv"
    write_frame_atomic(pd.DataFrame({"a": [1]}), target)
    before = target.read_bytes()

    def boom(self, *args, **kwargs):
        with open(args[0], "w") as handle:
            handle.write("partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(KeyboardInterrupt):
        write_frame_atomic(pd.DataFrame({"a": [2]}), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]


def test_unsupported_suffix_is_a_user_error(tmp_path):
    with pytest.raises(PartnerscoreError, match="unsupported file type"):
        write_frame_atomic(pd.DataFrame({"a": [1]}), tmp_path / "x.xlsx")
    with pytest.raises(PartnerscoreError, match="file not found"):
        read_frame(tmp_path / "missing.csv")


def test_text_atomic_and_fingerprint(tmp_path):
    path = write_text_atomic("héllo", tmp_path / "a.txt")
    other = write_text_atomic("héllo", tmp_path / "b.txt")
    assert path.read_text(encoding="utf-8") == "héllo"
    assert file_fingerprint(path) == file_fingerprint(other)


def _write_each_kind(kind, path):
    """Write ``path`` with one of the atomic writers (the content names the kind)."""
    frame = pd.DataFrame({"partner_id": ["P1"], "kind": [kind]})
    if kind == "write_frame_atomic":
        return write_frame_atomic(frame, path)
    if kind == "write_text_atomic":
        return write_text_atomic(f"partner_id,kind\nP1,{kind}\n", path)
    if kind == "stage_text":
        return core.publish_staged([core.stage_text(f"partner_id,kind\nP1,{kind}\n", path)])[0]
    if kind == "stage_frames":
        return core.publish_staged(core.stage_frames([(frame, path)]))[0]
    file = core.AppendedFile(path)  # stage_file
    file.append(frame)
    file.close()
    return core.publish_staged([(file.tmp, file.path)])[0]


WRITERS = ["write_frame_atomic", "write_text_atomic", "stage_text", "stage_frames", "stage_file"]


@pytest.mark.parametrize("kind", WRITERS)
@pytest.mark.parametrize("link", ["absolute", "relative", "chain", "dangling"])
def test_atomic_writers_write_through_a_symbolic_link(kind, link, tmp_path):
    """A temporary renamed over a link replaced the link with a plain file: the link's target
    (data/scores/latest.csv -> /shared/scores.csv) kept its old content. Now the temporary is
    staged beside the target and renamed over it; a dangling link creates its target."""
    shared = tmp_path / "shared" / "scores.csv"
    if link != "dangling":
        shared.parent.mkdir()
        shared.write_text("partner_id,kind\nP0,old\n")
    path = tmp_path / "data" / "latest.csv"
    path.parent.mkdir()
    if link == "relative":
        path.symlink_to("../shared/scores.csv")
    elif link == "chain":
        (tmp_path / "data" / "middle.csv").symlink_to(shared)
        path.symlink_to("middle.csv")
    else:
        path.symlink_to(shared)
    assert _write_each_kind(kind, path) == path
    assert path.is_symlink() and os.path.realpath(path) == str(shared)
    assert read_frame(shared)["kind"].tolist() == [kind]
    assert [p.name for p in shared.parent.iterdir()] == ["scores.csv"]  # no temporary left
    beside = {"latest.csv", "middle.csv"} if link == "chain" else {"latest.csv"}
    assert {p.name for p in path.parent.iterdir()} == beside


@pytest.mark.parametrize("kind", WRITERS)
def test_atomic_writers_flush_the_file_before_the_rename_and_the_folder_after(
    kind, tmp_path, monkeypatch
):
    """A temporary was renamed over its target without fsync: after a power cut the new name
    could stand on an empty or partial file, and ``experiment assign``'s order (the registry
    before the assignment table) was not kept on the disk. Every single-file publish now
    flushes the temporary, renames it, then flushes the folder."""
    events = []
    flush, rename = core._fsync, os.replace
    monkeypatch.setattr(core, "_fsync", lambda p: (events.append(("fsync", Path(p))), flush(p)))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(("replace", Path(a), Path(b))), rename(a, b))
    )
    path = tmp_path / "data" / "scores.csv"
    path.parent.mkdir()
    path.write_text("partner_id,kind\nP0,old\n")
    assert _write_each_kind(kind, path) == path
    assert read_frame(path)["kind"].tolist() == [kind]
    renames = [e for e in events if e[0] == "replace"]
    assert len(renames) == 1 and renames[0][2] == path
    tmp = renames[0][1]
    at = events.index(renames[0])
    assert ("fsync", tmp) in events[:at]  # the bytes first
    assert events[at + 1 :] == [("fsync", path.parent)]  # then the rename


def test_a_listed_set_is_published_manifest_last_through_links_and_checked(tmp_path):
    out, shared = tmp_path / "out", tmp_path / "shared"
    (out / "q").mkdir(parents=True)
    shared.mkdir()
    (out / "b.csv").symlink_to(shared / "b.csv")  # a dangling link: its target is created
    (out / "q" / "x.csv").write_text("partner_id\nP1\n")  # written earlier by the run
    staged = [core.stage_text("a\n1\n", out / "a.csv"), core.stage_text("b\n2\n", out / "b.csv")]
    paths = core.publish_listed(
        staged, {"as_of": "2026-07-01"}, out / "m.json", written=[out / "q" / "x.csv"]
    )
    assert paths == [out / "a.csv", out / "b.csv", out / "m.json"]
    assert (out / "b.csv").is_symlink() and (shared / "b.csv").read_text() == "b\n2\n"
    manifest = core.check_listed(out / "m.json")
    assert manifest["as_of"] == "2026-07-01"
    assert sorted(manifest["files"]) == ["a.csv", "b.csv", "q/x.csv"]
    assert manifest["files"]["a.csv"] == file_fingerprint(out / "a.csv")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary
    # another run's file beside this manifest (a kill between two renames), or one gone
    (out / "a.csv").write_text("a\n3\n")
    with pytest.raises(PartnerscoreError, match=r"a\.csv: not the file m\.json lists") as err:
        core.check_listed(out / "m.json")
    assert len(str(err.value).splitlines()) == 1
    assert core.check_listed(out / "m.json", strict=False)["as_of"] == "2026-07-01"  # edited
    core.publishing_mark(out / "m.json").touch()  # ... unless a publish was under way
    with pytest.raises(PartnerscoreError, match=r"a\.csv: .* interrupted while publishing"):
        core.check_listed(out / "m.json", strict=False)
    core.publishing_mark(out / "m.json").unlink()
    (out / "a.csv").write_text("a\n1\n")
    (out / "q" / "x.csv").unlink()
    with pytest.raises(PartnerscoreError, match=r"x\.csv: not the file m\.json lists"):
        core.check_listed(out / "m.json")
    # a failure before the renames publishes nothing and leaves no temporary
    staged = [core.stage_text("a\n9\n", out / "a.csv")]
    with pytest.raises(TypeError):
        core.publish_listed(staged, {"bad": object()}, out / "m.json")
    assert (out / "a.csv").read_text() == "a\n1\n"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("kind", WRITERS)
def test_a_symbolic_link_loop_is_one_line(kind, tmp_path):
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    with pytest.raises(PartnerscoreError) as err:
        _write_each_kind(kind, tmp_path / "a.csv")
    assert str(err.value) == f"{tmp_path / 'a.csv'}: cannot write: symbolic link loop"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_a_link_to_a_file_that_cannot_be_written_names_both(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "scores.csv").mkdir()  # a folder where the file should be
    (tmp_path / "latest.csv").symlink_to(tmp_path / "shared" / "scores.csv")
    with pytest.raises(PartnerscoreError) as err:
        write_text_atomic("x", tmp_path / "latest.csv")
    assert str(err.value) == (
        f"{tmp_path / 'latest.csv'} (link to {tmp_path / 'shared' / 'scores.csv'}): "
        "is a folder, expected a file path"
    )


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
            st.one_of(st.none(), st.text(max_size=4)),
            st.booleans(),
            st.integers(-5, 5),
            st.one_of(st.none(), st.integers(0, 3)),
        ),
        max_size=30,
    )
)
def test_parquet_writer_reads_back_what_pandas_default_writes(rows, tmp_path):
    """Dictionary pages only for non-float columns: same frame read back as ``to_parquet``."""
    import pyarrow.parquet as pq

    frame = pd.DataFrame(
        {
            "score": [np.nan if r[0] is None else r[0] for r in rows],
            "tier": pd.array([r[1] for r in rows], dtype="str"),
            "flag": [r[2] for r in rows],
            "count": np.array([r[3] for r in rows], dtype="int64"),
            "as_of": pd.to_datetime(
                [
                    pd.NaT if r[4] is None else pd.Timestamp("2025-01-01") + pd.Timedelta(days=r[4])
                    for r in rows
                ]
            ),
            "mixed": pd.array([r[1] for r in rows], dtype=object),
        }
    )
    fast = write_frame_atomic(frame, tmp_path / "fast.parquet")
    frame.to_parquet(tmp_path / "slow.parquet", index=False)  # the twin: pandas' defaults
    pd.testing.assert_frame_equal(pd.read_parquet(fast), pd.read_parquet(tmp_path / "slow.parquet"))
    meta = pq.ParquetFile(fast).metadata
    if meta.num_row_groups:
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        pages = {n: meta.row_group(0).column(i).has_dictionary_page for i, n in enumerate(names)}
        assert not pages["score"] and pages["tier"]


def _open_quote_reference(data: bytes) -> int | None:
    """Byte by byte: the line of the quote that leaves ``data`` inside a quoted field."""
    inside, opened, line, prev, i = False, None, 1, ord("\n"), 0
    while i < len(data):
        if data[i] == ord('"'):
            j = i
            while j < len(data) and data[j] == ord('"'):
                j += 1
            if inside:  # "" is a quote; an odd run closes the field
                inside = (j - i) % 2 == 0
            elif prev in b",\r\n" and (j - i) % 2 == 1:  # opens only at a field start
                inside, opened = True, line
            prev, i = ord('"'), j
            continue
        line += data[i] == ord("\n")
        prev, i = data[i], i + 1
    return opened if inside else None


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(st.sampled_from([b"a", b",", b"\n", b"\r", b'"', b'"', b'"']), max_size=40).map(
        b"".join
    ),
    chunk=st.sampled_from([1, 2, 3, 5, 1 << 22]),
    scan=st.sampled_from([0, 1, 2, 256]),
)
def test_csv_lines_finds_the_quote_that_never_closes(data, chunk, scan, tmp_path):
    """Line count and open quote equal a byte-by-byte reader's, whatever the chunk boundaries
    and however many runs of quotes are read one at a time before the rest at once; a file
    ends inside a quoted field exactly when the csv module reads a line after it into that
    field."""
    path = tmp_path / "t.csv"
    path.write_bytes(data)
    saved = core._CSV_CHUNK, core._SCAN_RUNS
    core._CSV_CHUNK, core._SCAN_RUNS = chunk, scan
    try:
        lines, opened = csv_lines(path)
    finally:
        core._CSV_CHUNK, core._SCAN_RUNS = saved
    assert lines == data.count(b"\n") + (data[-1:] not in (b"", b"\n"))
    assert opened == _open_quote_reference(data)
    rows = list(csv.reader(io.StringIO(data.decode() + "\nEND\n", newline="")))
    assert (opened is not None) == (rows[-1] != ["END"])


def test_csv_lines_skips_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbf"a,b\n1,2\n')
    assert csv_lines(path) == (2, 1)


def test_a_file_of_the_other_format_is_said_so_but_a_csv_header_like_its_magic_is_read(tmp_path):
    """A Parquet file named .csv said "not UTF-8 text at line 1 (the header): byte 0xF0", a
    CSV named .parquet Arrow's "Parquet magic bytes not found in footer"; a CSV whose header
    begins like Parquet's magic bytes (PAR1, PARE: PARENT_ID) is CSV."""
    from partnerscore.features.core import PartnerscoreError, read_frame

    parquet_as_csv, csv_as_parquet = tmp_path / "p.csv", tmp_path / "c.parquet"
    pd.DataFrame({"partner_id": ["p1"]}).to_parquet(parquet_as_csv)
    csv_as_parquet.write_text("partner_id\np1\n")
    for path, said in [
        (parquet_as_csv, "a Parquet file, not CSV text (name it .parquet)"),
        (csv_as_parquet, "not a Parquet file (no Parquet footer; CSV text named .parquet?)"),
    ]:
        with pytest.raises(PartnerscoreError) as got:
            read_frame(path)
        assert got.value.message == f"{path}: cannot read file: {said}"
    for header in ("PARENT_ID", "PAR1_ID"):
        path = tmp_path / f"{header}.csv"
        path.write_text(f"{header},partner_id\nx,p1\n")
        assert read_frame(path).columns.tolist() == [header, "partner_id"]


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_listed_set_is_renamed_under_a_lock_on_its_folder(tmp_path, monkeypatch):
    # two runs publishing into one folder at once interleaved their renames (one's training
    # set, the other's truth and manifest): the renames now hold an exclusive lock on it
    import fcntl
    import threading

    inside, go = threading.Event(), threading.Event()
    publish = core._publish

    def paused(tmp, path):
        inside.set()
        assert go.wait(60)
        return publish(tmp, path)

    monkeypatch.setattr(core, "_publish", paused)
    staged = [core.stage_text("a\n1\n", tmp_path / "a.csv")]
    job = threading.Thread(target=core.publish_listed, args=(staged, {}, tmp_path / "m.json"))
    job.start()
    try:
        assert inside.wait(60)  # the job is between its mark and its renames
        handle = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(handle)
    finally:
        go.set()
        job.join(60)
    assert core.check_listed(tmp_path / "m.json")["files"] == {
        "a.csv": file_fingerprint(tmp_path / "a.csv")
    }
    assert not core.publishing_mark(tmp_path / "m.json").exists()
    handle = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(handle)


def test_a_file_published_with_companions_is_refused_only_after_an_interrupted_publish(
    tmp_path,
):
    scores, rejects = tmp_path / "scores.csv", tmp_path / "scores.rejects.csv"
    manifest = core.companion_manifest(scores)
    assert manifest == tmp_path / "scores.manifest.json"
    again = "run `partnerscore score` again"
    scores.write_text("partner_id\nP1\n")
    core.check_companions(scores, again)  # a lone file (a copy, an older version's): read
    # a first publish killed before its manifest existed: the mark says so
    core.publishing_mark(manifest).touch()
    with pytest.raises(PartnerscoreError) as err:
        core.check_companions(scores, again)
    message = str(err.value)
    assert message.startswith(f"{scores}: its publish with the files beside it was interrupted")
    assert message.endswith(again) and len(message.splitlines()) == 1
    core.publishing_mark(manifest).unlink()
    staged = [core.stage_text("partner_id\nP2\n", scores), core.stage_text("r\n", rejects)]
    core.publish_listed(staged, {}, manifest)
    core.check_companions(scores, again)
    rejects.write_text("r\nother\n")  # edited since, or replaced by another run: no mark
    core.check_companions(scores, again)
    core.publishing_mark(manifest).touch()  # a later publish killed between its renames
    with pytest.raises(PartnerscoreError, match=r"scores\.rejects\.csv: .* interrupted"):
        core.check_companions(scores, again)


@pytest.mark.skipif(os.name != "posix", reason="flock")
@pytest.mark.parametrize("reader", ["check_companions", "check_listed"])
def test_a_reader_meeting_a_publish_under_way_waits_for_it(tmp_path, monkeypatch, reader):
    # a reader that met the publishing mark of a live publish (another process between its
    # renames) refused the files as an interrupted publish's: it now waits for the publish's
    # lock and reads the new set whole
    import threading

    scores, rejects = tmp_path / "scores.csv", tmp_path / "scores.rejects.csv"
    manifest = core.companion_manifest(scores)
    core.publish_listed(
        [core.stage_text("partner_id\nP1\n", scores), core.stage_text("r\n", rejects)],
        {},
        manifest,
    )
    inside, go = threading.Event(), threading.Event()
    publish = core._publish
    renamed = []

    def paused(tmp, path):
        done = publish(tmp, path)
        renamed.append(path)
        if len(renamed) == 1:  # the new scores beside the old rejects
            inside.set()
            assert go.wait(60)
        return done

    monkeypatch.setattr(core, "_publish", paused)
    staged = [core.stage_text("partner_id\nP2\n", scores), core.stage_text("r\nnew\n", rejects)]
    job = threading.Thread(target=core.publish_listed, args=(staged, {}, manifest))
    job.start()
    got = []
    try:
        assert inside.wait(60)  # the mark is there, the set half renamed
        assert core.publishing_mark(manifest).exists()
        check = getattr(core, reader)
        target = scores if reader == "check_companions" else manifest
        read = threading.Thread(target=lambda: got.append(check(target, "again")))
        read.start()
        read.join(0.5)
        assert read.is_alive()  # waiting for the publish, not refusing its files
    finally:
        go.set()
        job.join(60)
    read.join(60)
    assert len(got) == 1  # no error: the new set, whole
    assert rejects.read_text() == "r\nnew\n"
