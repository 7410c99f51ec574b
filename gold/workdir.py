"""Run artifacts in a ``--workdir``: config.json, metrics.csv (+ TensorBoard events),
result.json, and the rule that decides whether a workdir may be resumed.

Every launcher writes the same files the same way: it refuses a workdir holding a run
with a different config (:func:`check_resumable`), and on a resume drops the metric rows
written after the checkpoint it continues from (:class:`MetricsWriter` ``resume_step``).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

_IMPORT_TIME = time.time()
ABSENT = "<absent>"


def process_start_time() -> float:
    """Unix time (seconds) at which this process started.

    Read from ``/proc`` on Linux (about 10 ms resolution); elsewhere the time this
    module was imported.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        started = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORT_TIME
    return min(started, _IMPORT_TIME)


PROCESS_START = process_start_time()


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


# ------------------------------------------------------------------ resume or refuse
def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _matches(field: str, prefixes: Iterable[str]) -> bool:
    return any(field == p or field.startswith(p + ".") for p in prefixes)


def config_differences(old: Any, new: Any, harmless_fields: Iterable[str] = ()) -> list[str]:
    """``'field: old -> new'`` for every field that differs between two configs.

    Args:
      old, new: configs (dicts, ConfigDicts or JSON-able nests); compared as JSON.
      harmless_fields: dotted fields (or prefixes: ``'eval'`` covers ``'eval.epochs'``)
        that may change without making the runs different.

    A field missing on one side shows as ``'<absent>'``.
    """
    harmless = tuple(harmless_fields)
    a = _flatten(json.loads(json.dumps(to_jsonable(old))))
    b = _flatten(json.loads(json.dumps(to_jsonable(new))))
    diffs = []
    for f in sorted(set(a) | set(b)):
        if _matches(f, harmless):
            continue
        if a.get(f, ABSENT) != b.get(f, ABSENT):
            diffs.append(f"{f}: {a.get(f, ABSENT)!r} -> {b.get(f, ABSENT)!r}")
    return diffs


def check_resumable(workdir: str, config: Any, harmless_fields: Iterable[str] = ()) -> None:
    """Refuse to continue a run in ``workdir`` that was started with another config.

    Passes when ``workdir`` has no ``config.json`` (a new run) or when its config equals
    ``config`` up to ``harmless_fields`` (see :func:`config_differences`).

    Raises:
      ValueError: the stored config differs; the message lists every difference.
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return
    diffs = config_differences(read_json(path), config, harmless_fields)
    if diffs:
        raise ValueError(
            f"workdir {workdir} holds a run with a different config; refusing to resume it. "
            f"Use a new --workdir (or delete this one). Differences: " + "; ".join(diffs))


def start_run(workdir: str, config: Any, harmless_fields: Iterable[str] = ()) -> tuple[str, Optional[dict]]:
    """Open ``workdir`` for a resumable run of ``config``.

    Refuses a workdir holding another config (:func:`check_resumable`); returns
    ``(absolute workdir, stored result)`` when the run already finished (its
    ``result.json`` is kept, nothing is recomputed), else ``(absolute workdir, None)``
    after saving ``config.json``.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_resumable(workdir, config, harmless_fields)
    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        print(f"{workdir} holds a finished run; its result is kept", flush=True)
        return workdir, read_json(result_path)
    prepare_workdir(workdir, config)
    return workdir, None


# ---------------------------------------------------------------------- metrics
def truncate_metrics(path: str, last_step: int) -> None:
    """Drop the rows of the CSV at ``path`` whose step is after ``last_step``.

    A resumed run calls this with the step of the checkpoint it continues from, so the
    rows an interrupted attempt wrote after that checkpoint are not duplicated.
    """
    if not os.path.exists(path):
        return
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= last_step]
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(keep)
    os.replace(tmp, path)


def log_line(text: str, stream=sys.stdout) -> None:
    """Print ``[   12.3s] text`` (seconds since the process started), above any progress bar."""
    from gold import progress  # local: progress imports tqdm

    progress.write(f"[{time.time() - PROCESS_START:7.1f}s] {text}", stream)


class MetricsWriter:
    """Append rows of scalars to ``metrics.csv``, TensorBoard event files in the same
    folder, and one log line per row.

    Args:
      workdir: the run's folder.
      name: CSV file name.
      stream: where the log lines go (None = no log lines).
      resume_step: the step of the checkpoint a resumed run continues from: CSV rows
        after it are dropped and TensorBoard discards its events after it.
      tensorboard: also write TensorBoard events (tensorboardX, no TensorFlow needed).
      fields: the CSV columns after ``step`` of a new file (default: those of the first
        row), e.g. training metrics and evaluation metrics written in different rows.
    """

    def __init__(self, workdir: str, name: str = "metrics.csv", stream=sys.stdout,
                 resume_step: Optional[int] = None, tensorboard: bool = True,
                 fields: Optional[Sequence[str]] = None):
        self.path = os.path.join(workdir, name)
        self._stream = stream
        self._fields: Optional[list[str]] = None
        if resume_step is not None:
            truncate_metrics(self.path, int(resume_step))
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                header = f.readline().strip()
            self._fields = header.split(",") if header else None
        if self._fields is None and fields is not None:
            self._fields = ["step", *fields]
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                f.write(",".join(self._fields) + "\n")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter  # local: slow import, optional output

            purge = None if resume_step is None else int(resume_step) + 1
            self._tb = SummaryWriter(logdir=workdir, purge_step=purge)

    def write(self, step: int, **scalars: float) -> None:
        """Record ``scalars`` at ``step`` (the first call fixes the CSV's column set)."""
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        new_file = self._fields is None
        if new_file:
            self._fields = list(row)
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore",
                                    lineterminator="\n")
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))
            self._tb.flush()
        if self._stream is not None:
            text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
            log_line(f"step {step}: {text}", self._stream)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
