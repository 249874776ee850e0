"""partnerscore: score newly onboarded channel partners (the public Python API).

Importing the package is cheap: the API functions load their machinery (pandas, LightGBM,
MLflow) on first use. See :mod:`partnerscore.serving.api` for the functions and the README's
"Python API" section for a runnable example.
"""

from __future__ import annotations

from importlib import import_module

__all__ = [
    "PartnerscoreError",
    "__version__",
    "build",
    "forecast",
    "load_model",
    "score",
    "simulate",
    "train",
    "validate",
]


def __getattr__(name: str):
    if name == "__version__":  # read when asked: importlib.metadata is ~60 ms at start-up,
        # before the console script can handle SIGTERM (serving/console.py)
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("partnerscore")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0+unknown"
    if name == "PartnerscoreError":  # what every API function raises for bad input
        return import_module("partnerscore.features.core").PartnerscoreError
    if name in __all__:
        return getattr(import_module("partnerscore.serving.api"), name)
    raise AttributeError(f"module 'partnerscore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
