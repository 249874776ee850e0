"""A build killed between its renames is refused by ``train`` in one line.

``build`` renamed training_set.parquet, then truth.parquet, then manifest.json into its
folder: killed between two renames (SIGKILL, out of memory) it left one build's training set
beside the previous build's manifest and truth, and ``train`` logged the previous build's
features, data end and inputs as the new model's lineage, with no sign of it. The manifest is
renamed last and lists the files' SHA-256, with a mark beside it while the renames run; the
child process kills itself at the exact rename (a sitecustomize hook), so nothing here
depends on timing. The next build into the folder says in one ``note:`` line what the killed
one left (and ``--json`` records it), then replaces the set.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from support import assert_said_left_publish, killed_at_rename

from partnerscore.features.core import PartnerscoreError, check_listed
from partnerscore.training.train import load_training_set

FILES = ("training_set.parquet", "truth.parquet", "manifest.json")


def _build(raw_dir, out, env, *options):
    """A real ``partnerscore [options] build`` of onboarding ages 30 and 90 into ``out``."""
    return subprocess.run(
        [sys.executable, "-m", "partnerscore.serving.cli", *options, "build"]
        + ["--raw", str(raw_dir), "--out", str(out), "--ages", "30,90"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
@pytest.mark.parametrize("renames", [1, 2, 3])
def test_train_refuses_a_build_killed_between_its_renames(raw_dir, built_dir, tmp_path, renames):
    out = tmp_path / "features"
    shutil.copytree(built_dir, out)  # the previous build: onboarding ages 30, 60, 90, 180
    before = {name: (out / name).read_bytes() for name in FILES}
    env = killed_at_rename(dict(os.environ), tmp_path / "hook", out, renames)
    job = _build(raw_dir, out, env)
    assert job.returncode == -signal.SIGKILL, job.stderr
    changed = {name for name in FILES if (out / name).read_bytes() != before[name]}
    assert changed == set(FILES[:renames]), changed  # this build's first files, in order
    if renames == len(FILES):  # killed after the manifest's rename: the new build, whole
        frame, manifest, _ = load_training_set(out)
        assert manifest["build_config"]["ages"] == [30, 90]
        assert sorted(frame["age_days"].unique()) == [30, 90]
    else:
        with pytest.raises(PartnerscoreError) as caught:
            load_training_set(out)
        message = str(caught.value)
        assert len(message.splitlines()) == 1
        assert message.startswith(f"{out / FILES[0]}: not the file manifest.json lists"), message
        assert "(one was interrupted while publishing); run `partnerscore build` again" in message
        with pytest.raises(PartnerscoreError):
            check_listed(out / "manifest.json")
    assert (out / ".manifest.json.publishing").exists()

    # the next build replaced the set with nothing said until 2026-12-06: now one note names
    # the folder, the mark and the files not those manifest.json lists; --json records it
    again = _build(raw_dir, out, dict(os.environ), "--json")
    assert again.returncode == 0, again.stderr
    said = f"{out}: an earlier build run was killed while publishing "
    said += "(.manifest.json.publishing was left)"
    mixed = list(FILES[:renames]) if renames < len(FILES) else []
    if renames == 1:
        said += ": training_set.parquet is not the file manifest.json lists, a mix of two runs'"
    elif renames == 2:
        said += ": training_set.parquet and 1 more are not the files manifest.json lists, a mix "
        said += "of two runs'"
    else:
        said += ", but its files are the set manifest.json lists"
    said += (" files" if mixed else "") + "; this run replaced them with its own"
    assert_said_left_publish(again, out, "manifest.json", mixed, said)
    frame, manifest, _ = load_training_set(out)  # this build's set, whole
    assert manifest["build_config"]["ages"] == [30, 90]
    assert not (out / ".manifest.json.publishing").exists()
    if renames != 1:
        return
    # a build with no mark there says nothing
    quiet = _build(raw_dir, out, dict(os.environ), "--json")
    assert quiet.returncode == 0 and "note: " not in quiet.stderr, quiet.stderr
    assert json.loads(quiet.stdout)["interrupted_publish"] is None


def test_a_training_set_edited_after_its_build_is_still_read(built_dir, tmp_path):
    # only an interrupted build is refused: a training set changed by hand since is read
    out = tmp_path / "features"
    shutil.copytree(built_dir, out)
    frame, manifest, _ = load_training_set(out)
    frame.head(len(frame) - 1).to_parquet(out / "training_set.parquet")
    again, _, _ = load_training_set(out)
    assert len(again) == len(frame) - 1
    assert set(manifest["files"]) == {"training_set.parquet", "truth.parquet"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a real process")
def test_a_build_after_a_first_build_killed_says_no_manifest_tells_whose_files(raw_dir, tmp_path):
    # a first build into an empty folder killed after its first rename: no manifest.json says
    # whose the training set is. The next build says so, and replaces it
    out = tmp_path / "features"
    env = killed_at_rename(dict(os.environ), tmp_path / "hook", out, 1)
    out.mkdir()
    job = _build(raw_dir, out, env)
    assert job.returncode == -signal.SIGKILL, job.stderr
    assert (out / ".manifest.json.publishing").exists() and not (out / "manifest.json").exists()
    again = _build(raw_dir, out, dict(os.environ), "--json")
    assert again.returncode == 0, again.stderr
    said = (
        f"{out}: an earlier build run was killed while publishing (.manifest.json.publishing was "
        "left): no manifest.json lists the files, whose run cannot be told; this run replaced "
        "them with its own"
    )
    assert_said_left_publish(again, out, None, [], said)
    load_training_set(out)  # whole
    assert not (out / ".manifest.json.publishing").exists()
