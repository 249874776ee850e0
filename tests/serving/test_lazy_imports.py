"""Light commands never import the modelling stack (measured in a fresh interpreter)."""

import json
import subprocess
import sys

HEAVY = ("mlflow", "lightgbm", "sklearn", "shap", "optuna", "pyspark")
PROGRAM = """
import json, sys
from partnerscore.serving.cli import main
seen = {}
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    seen[argv[0]] = sorted({m.split(".")[0] for m in sys.modules})
    assert code in (0, None), (argv, code)
print(json.dumps(seen))
"""


def modules_seen(commands: list[list[str]], cwd, env=None) -> dict[str, list[str]]:
    """Top-level modules imported after each CLI command, run in turn in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_metrics_and_validate_stay_light(raw_dir, tmp_path):
    seen = modules_seen([["--help"], ["metrics"], ["validate", str(raw_dir)]], tmp_path)
    assert "pandas" not in seen["--help"] and "pandas" not in seen["metrics"]
    for command, modules in seen.items():
        assert not set(HEAVY) & set(modules), (command, set(HEAVY) & set(modules))
    assert "pyarrow" in seen["validate"]  # the check would notice a real import
    # pandera (~1 s) is imported only where a schema is checked (tests), never by a job
    assert "pandera" not in seen["validate"]


def test_the_score_job_scores_without_lightgbm_or_sklearn(raw_dir, cli_config, tmp_path):
    """It loads the champion's scoring view (~2 s of imports less in every score process)."""
    config, env = cli_config
    scores = tmp_path / "scores.parquet"
    argv = ["score", "--raw", str(raw_dir), "--as-of", "2026-03-01", "--out", str(scores)]
    modules = set(modules_seen([[*argv, "-c", str(config)]], tmp_path, env)["score"])
    assert not {"lightgbm", "sklearn", "scipy", "mlflow", "shap"} & modules
    assert {"pyarrow", "sqlalchemy"} <= modules  # the check would notice a real import
    assert scores.is_file()


def test_models_reads_the_registry_without_lightgbm_or_sklearn(cli_config, tmp_path):
    """`partnerscore models` imported `training.train` (LightGBM, scikit-learn, SciPy's stats)
    for two alias names and the drift rule: ~1 s of its ~4.5 s before it read the store."""
    config, env = cli_config
    modules = set(modules_seen([["models", "-c", str(config)]], tmp_path, env)["models"])
    # (MLflow itself imports pyspark where it is installed: mlflow/types/schema.py)
    assert not {"lightgbm", "sklearn", "shap", "optuna"} & modules
    assert {"mlflow", "sqlalchemy"} <= modules  # the check would notice a real import


def test_experiment_schemas_load_pandera_without_pandas_on_spark(tmp_path):
    """pandera imports pyspark.pandas when pyspark is installed (~0.25 s and a pandas-version
    FutureWarning on every experiment command); the assignment schema never uses it."""
    program = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "from partnerscore.features.experiments import assignment_schema\n"
        "assignment_schema()\n"
        "assert 'pandera' in sys.modules and 'pyspark' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
