import pandas as pd
import pytest

from partnerscore.features.core import (
    FrozenConfig,
    PartnerscoreError,
    file_fingerprint,
    read_frame,
    stable_hash,
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
