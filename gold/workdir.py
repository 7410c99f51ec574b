"""Run artifacts in a ``--workdir``: config.json, metrics.csv, result.json.

Every launcher writes the same files the same way (DESIGN.md, CLI contract).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Any, Mapping, Optional

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Convert numpy / jax scalars and arrays, tuples and ConfigDicts to JSON types."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if hasattr(value, "shape") and hasattr(value, "tolist"):
        return np.asarray(value).tolist()
    return value


def write_json(path: str, payload: Any) -> None:
    """Write ``payload`` as indented JSON atomically (tmp file + rename)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(to_jsonable(payload), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def prepare_workdir(workdir: str, config: Any) -> str:
    """Create ``workdir`` and save the run's config as ``config.json``; returns abspath."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "config.json"), config)
    return workdir


class MetricsWriter:
    """Append rows of scalars to ``metrics.csv`` and echo one log line per row."""

    def __init__(self, workdir: str, name: str = "metrics.csv", stream=sys.stdout):
        self.path = os.path.join(workdir, name)
        self._stream = stream
        self._fields: Optional[list[str]] = None
        self._start = time.time()
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                header = f.readline().strip()
            self._fields = header.split(",") if header else None

    def write(self, step: int, **scalars: float) -> None:
        """Record ``scalars`` at ``step`` (the first call fixes the column set)."""
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        new_file = self._fields is None
        if new_file:
            self._fields = list(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._stream is not None:
            text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
            print(f"[{time.time() - self._start:7.1f}s] step {step}: {text}", file=self._stream, flush=True)
