"""Shared building blocks: user-facing errors, frozen configs, hashing and atomic frame I/O."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

FRAME_SUFFIXES = (".csv", ".parquet")


class PartnerscoreError(Exception):
    """An error the user can act on: the CLI prints its one-line message, never a traceback.

    Args:
        message: One line naming the file, column and row where known.
        exit_code: Process exit code used by the CLI.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = " ".join(str(message).split())
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class FrozenConfig(BaseModel):
    """Base for every configuration model: immutable and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def stable_hash(payload: Any, length: int = 12) -> str:
    """Hash any JSON-serialisable payload (or pydantic model) deterministically.

    Args:
        payload: A pydantic model or JSON-serialisable value.
        length: Number of hex characters to keep.

    Returns:
        The leading ``length`` hex characters of the SHA-256 of canonical JSON.
    """
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frame_format(path: str | Path) -> str:
    """Return ``csv`` or ``parquet`` from a file name, or raise a PartnerscoreError."""
    suffix = Path(path).suffix.lower()
    if suffix not in FRAME_SUFFIXES:
        raise PartnerscoreError(f"{path}: unsupported file type '{suffix}' (use .csv or .parquet)")
    return suffix.lstrip(".")


def write_frame_atomic(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a frame as CSV or Parquet (by suffix) so that readers never see a partial file.

    The frame is written to a temporary file in the target folder and renamed over the target,
    so a killed job leaves either the old file or the new one, never half of one.

    Args:
        frame: Data to write.
        path: Destination ending in ``.csv`` or ``.parquet``.

    Returns:
        The destination path.
    """
    path = Path(path)
    fmt = frame_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            frame.to_csv(tmp_name, index=False)
        else:
            frame.to_parquet(tmp_name, index=False)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write text (UTF-8) atomically: temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file written by partnerscore (not for raw contract tables)."""
    path = Path(path)
    if not path.exists():
        raise PartnerscoreError(f"{path}: file not found")
    if frame_format(path) == "csv":
        # only empty cells are missing: "NA" is a region, "null" a name
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    return pd.read_parquet(path)
