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
}
"""Variables set unless the user set them (MLflow reads the progress-bar one on every copy)."""

MLFLOW_LOGGERS = {
    "mlflow": logging.WARNING,  # "Creating initial MLflow database tables", "Validating ..."
    # MLflow warns that a PythonModel object is pickled: ours is a thin, versioned wrapper
    "mlflow.pyfunc": logging.ERROR,
    "alembic": logging.WARNING,  # a new store's migrations
    # "Failed to resolve installed pip version" on every logged model in an environment
    # without pip (uv venv makes none): the model's requirements.txt is ours, pip needs no pin
    "mlflow.utils.environment": logging.ERROR,
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
