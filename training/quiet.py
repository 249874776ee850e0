"""MLflow's chatter off: INFO lines, artifact progress bars, the pyfunc pickling warning.

The ``partnerscore`` console script quiets MLflow for its whole process
(:func:`quiet_mlflow`); the Python API only while one of its jobs runs, then gives the caller's
settings back (``serving/api.py``). :func:`mlflow_prints_nothing` turns off what MLflow prints
without a logger. Nothing here imports MLflow until a function needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

MLFLOW_ENVIRONMENT = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # read once, when mlflow is imported
    # a tracking server's run links ("View run ... at: http://...") went to stdout, before
    # `train --json`'s object; train's summary names the run and the store itself
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # MLflow's HTTP client retried a server that was down 7 times, waiting up to 120 s between
    # tries (over 5 minutes), and waited 120 s for an answer: 2 retries (after 0 and ~2 s),
    # 30 s for an answer
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""Variables set unless the user set them (MLflow reads them on every use but the level)."""

MLFLOW_LOGGERS = {
    "mlflow": logging.WARNING,  # "Creating initial MLflow database tables", "Validating ..."
    # MLflow warns that a PythonModel object is pickled: ours is a thin, versioned wrapper
    "mlflow.pyfunc": logging.ERROR,
    "alembic": logging.WARNING,  # a new store's migrations
    # "Failed to resolve installed pip version" on every logged model in an environment
    # without pip (uv venv makes none): the model's requirements.txt is ours, pip needs no pin
    "mlflow.utils.environment": logging.ERROR,
    # "Retrying (Retry(total=6 ...)) after connection broken by ..." per retry of MLflow's
    # HTTP client: the job's own error line says how it ended
    "urllib3.connectionpool": logging.ERROR,
    # a database store that went away: MLflow logged "SQLAlchemy database error" with three
    # tracebacks (ERROR) per failed call and "SQLAlchemy engine could not be created ...
    # retried" per try, psycopg "error ignored terminating <psycopg.Pipeline ...>" (WARNING)
    # before the job's own line (tests/serving/test_team_stores.py)
    "mlflow.store.db.utils": logging.CRITICAL,
    "psycopg": logging.ERROR,
}
"""Logger levels while quiet (an explicit ``MLFLOW_LOGGING_LEVEL`` of the user's wins)."""


def quiet_mlflow() -> None:
    """Quiet MLflow from now on (:data:`MLFLOW_ENVIRONMENT`, :data:`MLFLOW_LOGGERS`).

    Loggers are left at their levels when the user set ``MLFLOW_LOGGING_LEVEL`` to another
    level than WARNING: that is their choice of MLflow's verbosity.
    """
    for name, value in MLFLOW_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if os.environ["MLFLOW_LOGGING_LEVEL"].strip().upper() == "WARNING":
        for name, level in MLFLOW_LOGGERS.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def mlflow_prints_nothing() -> Iterator[None]:
    """MLflow's own ``eprint`` lines off while the block runs.

    ``mlflow.register_model`` prints "Successfully registered model ..." and "Created version
    ... of model ..." on stderr whatever the log level (``mlflow.utils.logging_utils.eprint``
    writes to MLflow's logging stream, not through a logger): in a notebook's ``train`` and
    after the CLI's own lines. The stream's state is given back after.
    """
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    was = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = was
