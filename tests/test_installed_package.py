"""partnerscore as a data team installs it: the wheel, not the repository's editable install.

The sdist is built, the wheel is built from the sdist, and the wheel goes (``--no-deps``) into a
fresh virtual environment whose dependencies are the suite's own (a ``.pth`` line naming this
environment's site-packages: nothing is downloaded). The package folder is made read-only (as
installed by root or in a read-only image), HOME is unusable (a scheduler's
``HOME=/nonexistent``) and every command runs from a folder outside the repository. As root
the commands run in a user namespace of their own (``unshare --user``), where the read-only
modes hold; without one, only the checks that need no privileges run.
"""

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")
DATA_FILES = {
    "models/playbook.yaml",
    "serving/static/app.js",
    "serving/static/report.css",
    "serving/templates/index.html",
    "serving/templates/partner.html",
    "serving/templates/monitor.html",
    "serving/templates/experiment.html",
}
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _user_namespace() -> list[str] | None:
    """``unshare --user`` as a command prefix if this machine can make a user namespace."""
    path = shutil.which("unshare")
    if path is None:
        return None
    probe = subprocess.run([path, "--user", "true"], capture_output=True, timeout=30)
    return [path, "--user"] if probe.returncode == 0 else None


PREFIX = _user_namespace() if ROOT else []
"""How to run a command that cannot write a read-only file (None: not possible here)."""


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel built from it (``uv build``'s default)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [str(UV), "build", "-q", "-o", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "setuptools" in done.stderr and "network" in done.stderr.lower():
        pytest.skip(f"cannot fetch the build backend: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (path,) = dist.glob("partnerscore-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed read-only; a foreign working folder and HOME."""
    root = tmp_path_factory.mktemp("installed")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # the suite's dependencies, after the venv's own packages (the editable install's finder
    # is a .pth of that folder, which a plain path line does not run)
    (site / "suite_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run(
        [str(UV), "pip", "install", "-q", "--offline", "--no-deps", "--compile-bytecode"]
        + ["--python", str(python), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    package = site / "partnerscore"
    for path in [package, *package.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    work = root / "work"  # the team's own folder
    work.mkdir()
    (root / "file").write_text("")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
        and not k.startswith("MLFLOW_")
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(root / "file" / "home"),  # below a file: no one can create anything there
        PYTHONDONTWRITEBYTECODE="1",
    )
    yield {"venv": venv, "python": python, "package": package, "work": work, "env": env}
    for path in [package, *package.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def run(installed: dict, *argv, prefix=(), timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, *map(str, argv)],
        cwd=installed["work"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def test_the_sdist_holds_what_the_wheel_needs_and_the_wheel_built_from_it_does(dist, wheel):
    (sdist,) = dist.glob("partnerscore-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md"} <= names
    assert names >= DATA_FILES  # the sdist keeps the repository's layout
    assert not any(name.startswith("tests/") for name in names)  # (MANIFEST.in)
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    assert {f"partnerscore/{name}" for name in DATA_FILES} <= files
    assert "partnerscore/__main__.py" in files
    assert not any("__pycache__" in name for name in files)


def test_version_and_module_entry_from_a_foreign_folder(installed, wheel):
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    version = next(
        line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Version:")
    )
    for argv in (
        ["partnerscore", "--version"],
        [installed["python"], "-m", "partnerscore", "--version"],
    ):
        done = run(installed, *argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"partnerscore {version}"
        assert done.stderr == ""
    where = run(
        installed, installed["python"], "-c", "import partnerscore; print(partnerscore.__file__)"
    )
    assert where.stdout.strip() == str(installed["package"] / "__init__.py")
    # the Python API as the README shows it (lazy re-exports of the top-level package)
    api = run(
        installed,
        installed["python"],
        "-c",
        "import partnerscore as ps; t = ps.simulate(partners=60, seed=1); "
        "print(len(ps.build(ps.validate(t))) > 0, ps.__version__)",
        prefix=PREFIX or (),
    )
    assert api.returncode == 0, api.stderr[-2000:]
    assert api.stdout.split() == ["True", version]


PACKAGE_TREE = """
import stat, sys, tempfile
from pathlib import Path
if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
from partnerscore.models.pyfunc import package_tree
with tempfile.TemporaryDirectory() as tmp:  # (a tempfile.mkdtemp() was left behind)
    root = package_tree(Path(tmp))
    for path in sorted(root.rglob("*")):
        writable = bool(path.stat().st_mode & stat.S_IWUSR)
        print(path.relative_to(root).as_posix(), "dir" if path.is_dir() else "file", writable)
"""


def _wheel_package_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {
            n.removeprefix("partnerscore/")
            for n in archive.namelist()
            if n.startswith("partnerscore/") and not n.endswith("/")
        }


@pytest.mark.parametrize("layout", ["read-only install", "zip archive"])
def test_the_pyfunc_code_tree_is_the_whole_package_and_writable(installed, wheel, layout):
    """``train`` logs the package's code with the model (``code_paths``). Copied with
    ``shutil.copytree`` from a read-only install, the copy kept the read-only modes and the
    second pass (the subpackages) failed: "Permission denied: '/tmp/.../code/partnerscore/
    features/...'" and ``train`` stopped. The wheel on ``sys.path`` is the zip layout."""
    argv = [installed["python"], "-c", PACKAGE_TREE]
    if layout == "zip archive":
        argv = [sys.executable, "-I", "-c", PACKAGE_TREE, wheel]
    done = run(installed, *argv, prefix=PREFIX or ())
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.rsplit(" ", 2) for line in done.stdout.splitlines()]
    assert {name for name, kind, _ in rows if kind == "file"} == _wheel_package_files(wheel)
    assert all(writable == "True" for _, _, writable in rows), rows


@pytest.mark.slow
def test_demo_and_the_logged_model_from_a_foreign_folder(installed):
    """The demo end to end as an unprivileged user: the package folder read-only, HOME
    unusable, run from the team's own folder; then the logged MLflow model loads in a fresh
    process and predicts."""
    if PREFIX is None:
        pytest.skip("running as root without a user namespace: a read-only folder is writable")
    before = listing(installed["package"])
    done = run(installed, "partnerscore", "demo", "--partners", "300", prefix=PREFIX)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # e.g. no matplotlib warnings about its config folder
    work = installed["work"]
    assert (work / "data" / "reports" / "index.html").is_file()
    assert ".venv" not in done.stdout  # the hints name nothing of the repository's
    assert listing(installed["package"]) == before  # nothing written beside the code
    uri = f"sqlite:///{work / 'data' / 'mlflow' / 'mlflow.db'}"
    script = (
        "import sys, mlflow, pandas as pd\n"
        "mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model('models:/partnerscore@champion')\n"
        "frame = pd.read_parquet(sys.argv[2]).head(20)\n"
        "out = model.predict(frame)\n"
        "print(len(out), out['model_version'].iloc[0])\n"
    )
    training_set = work / "data" / "features" / "training_set.parquet"
    loaded = run(installed, installed["python"], "-c", script, uri, training_set, prefix=PREFIX)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == ["20", "1"]


SHIPPED_FILES = """
import sys
sys.path.insert(0, sys.argv[1])
from partnerscore.models.policy import _load_playbook
from partnerscore.serving import experiment, report
print(report.HERE)
assert _load_playbook(None)
env = report._environment()
for name in ("index.html", "partner.html", "monitor.html", "experiment.html"):
    assert env.get_template(name).render is not None
for name in ("report.css", "app.js"):
    assert (report.HERE / "static" / name).read_text(encoding="utf-8")
assert experiment.HERE / "static" / "report.css"
print("ok")
"""


def test_the_shipped_files_are_read_from_a_zip_archive(wheel, tmp_path):
    """The wheel itself on ``sys.path`` (zipimport): the playbook, the templates and the
    stylesheet and script of the reports were found by ``Path(__file__)`` and a Jinja
    FileSystemLoader, which see no file inside an archive (the demo stopped at promote with
    "NotADirectoryError: ... .whl/partnerscore/models/playbook.yaml")."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", SHIPPED_FILES, str(wheel)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    where, ok = done.stdout.split()
    assert where.startswith(str(wheel)) and ok == "ok"
