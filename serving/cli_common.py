"""What the ``partnerscore`` console script and its command groups share.

The app factory, the ``--config`` option and configuration loading (imported lazily, so
``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Override file (.json, .toml or .yaml) for the defaults."),
]


def new_app(name: str, help: str) -> typer.Typer:
    """A Typer app with the project's defaults.

    Help on no arguments, no shell-completion commands, and no pretty tracebacks (errors are
    one line, see ``serving/cli.py``).
    """
    return typer.Typer(
        name=name,
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def load(path: Path | None):
    """The application configuration: shipped defaults, optionally overridden by one file."""
    from partnerscore.serving.config import load_config

    return load_config(path)
