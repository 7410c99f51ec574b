"""Utility scores as artifacts: the :class:`Utility` record, ``utility.npz`` + JSON.

Layout of a saved utility (``save_utility(path, u)``):

* ``<stem>.npz``: ``scores`` float32 ``[N]`` (HIGHER = MORE UTILITY), ``labels`` int32
  ``[N]``, ``ids`` int64 ``[N]`` (index in the dataset's official train order),
  optionally ``curve`` float32 ``[E, N]`` (mean per-sample loss curve over trials, loss
  family only), every extra array as ``extra_<name>``, and ``meta`` (the metadata as a
  JSON string, so the ``.npz`` alone is self-describing);
* ``<stem>.json`` beside it: ``indicator``, ``dataset``, ``num_samples``, ``settings``,
  ``seed``, ``seconds``, ``extras`` (names and shapes), ``has_curve``.

A score file is only ever applied to the dataset it was computed on: :func:`check_utility`
rejects another dataset name, another length or another label sequence (the labels pin the
sample order).
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
import zlib
from typing import Any, Optional

import numpy as np

from gold.workdir import to_jsonable, write_json

FILE_NAME = "utility.npz"
EXPECTED = ("a gold utility.npz (written by launch/utility.py or gold.utility.save_utility) or "
            "an official GoldFromOres score .json list")


class UtilityFileError(ValueError):
    """A score file that cannot be read: the message names the path, what went wrong and
    what was expected (:data:`EXPECTED`)."""


@dataclasses.dataclass
class Utility:
    """Per-sample utility of one dataset's training set.

    Attributes:
      scores: float32 ``[N]``, higher = more useful (e.g. minus the smoothed loss).
      labels: int32 ``[N]`` class of each sample (pins the sample order).
      ids: int64 ``[N]`` sample ids (index in the official train order).
      indicator: name, e.g. ``'loss'``, ``'density'``, ``'file'``.
      dataset: dataset name the scores belong to (``''`` if unknown, e.g. imported JSON).
      settings: the settings the indicator was computed with (JSON-able).
      seed: PRNG seed.
      seconds: wall-clock time spent computing it.
      curve: optional float32 ``[E, N]`` mean loss curve over trials (loss family).
      extras: optional named arrays whose leading or trailing axis is N (EL2N curve,
        forgetting counts, GAP features, ...).
    """

    scores: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    indicator: str
    dataset: str = ""
    settings: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    seconds: float = 0.0
    curve: Optional[np.ndarray] = None
    extras: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, np.float32)
        self.labels = np.asarray(self.labels, np.int32)
        self.ids = np.asarray(self.ids, np.int64)
        n = self.scores.shape[0] if self.scores.ndim == 1 else -1
        if self.scores.ndim != 1 or self.labels.shape != (n,) or self.ids.shape != (n,):
            raise ValueError(
                f"utility arrays must be 1-D of one length: scores {self.scores.shape}, "
                f"labels {self.labels.shape}, ids {self.ids.shape}")
        if not np.all(np.isfinite(self.scores)):
            bad = int(np.sum(~np.isfinite(self.scores)))
            raise ValueError(f"utility {self.indicator!r} has {bad} non-finite (NaN/inf) scores")
        if self.curve is not None:
            self.curve = np.asarray(self.curve, np.float32)
            if self.curve.ndim != 2 or self.curve.shape[1] != n:
                raise ValueError(f"curve must be [E, {n}], got {self.curve.shape}")
        self.extras = {k: np.asarray(v) for k, v in (self.extras or {}).items()}

    @property
    def num_samples(self) -> int:
        """N, the number of scored samples."""
        return int(self.scores.shape[0])

    def metadata(self) -> dict:
        """JSON-able description (everything but the arrays)."""
        return {
            "indicator": self.indicator,
            "dataset": self.dataset,
            "num_samples": self.num_samples,
            "settings": to_jsonable(self.settings),
            "seed": int(self.seed),
            "seconds": float(self.seconds),
            "has_curve": self.curve is not None,
            "extras": {k: list(v.shape) for k, v in self.extras.items()},
        }


def _paths(path: str) -> tuple[str, str]:
    """``(npz, json)`` paths for a directory or a ``.npz`` path."""
    if os.path.isdir(path) or not path.endswith(".npz"):
        npz = os.path.join(path, FILE_NAME)
    else:
        npz = path
    return npz, npz[: -len(".npz")] + ".json"


def save_utility(path: str, u: Utility) -> str:
    """Write ``u`` as ``.npz`` + ``.json``; ``path`` is a ``.npz`` file or a directory
    (then ``<dir>/utility.npz``). Returns the ``.npz`` path."""
    npz, meta_path = _paths(path)
    os.makedirs(os.path.dirname(os.path.abspath(npz)), exist_ok=True)
    meta = u.metadata()
    arrays: dict[str, Any] = {"scores": u.scores, "labels": u.labels, "ids": u.ids,
                              "meta": np.asarray(json.dumps(meta))}
    if u.curve is not None:
        arrays["curve"] = u.curve
    for k, v in u.extras.items():
        arrays[f"extra_{k}"] = v
    tmp = npz[: -len(".npz")] + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    write_json(meta_path, meta)
    return npz


def load_utility(path: str) -> Utility:
    """Read a utility written by :func:`save_utility` (the ``.npz`` file, or its
    directory).

    Raises:
      FileNotFoundError: no such file. UtilityFileError: not a readable utility file
        (e.g. a text file, a truncated download, an ``.npz`` without ``scores``).
    """
    npz, meta_path = (path, None) if os.path.isfile(path) else _paths(path)
    if not os.path.exists(npz):
        raise FileNotFoundError(f"no utility file at {npz}")
    try:
        with np.load(npz, allow_pickle=False) as f:
            if "scores" not in f.files:
                raise UtilityFileError(f"{npz}: no 'scores' array (has {f.files}); expected {EXPECTED}")
            data = {k: f[k] for k in f.files}
    except UtilityFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise UtilityFileError(f"{npz}: not a readable .npz ({type(e).__name__}: {e}); "
                               f"expected {EXPECTED}") from e
    if "meta" in data:
        meta = json.loads(str(data["meta"]))
    elif meta_path and os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    else:
        meta = {}
    n = data["scores"].shape[0]
    return Utility(
        scores=data["scores"],
        labels=data.get("labels", np.full(n, -1, np.int32)),
        ids=data.get("ids", np.arange(n, dtype=np.int64)),
        indicator=meta.get("indicator", "file"),
        dataset=meta.get("dataset", ""),
        settings=meta.get("settings", {}),
        seed=meta.get("seed", 0),
        seconds=meta.get("seconds", 0.0),
        curve=data.get("curve"),
        extras={k[len("extra_"):]: v for k, v in data.items() if k.startswith("extra_")},
    )


def check_utility(u: Utility, dataset_name: str, labels: np.ndarray,
                  *, source: str = "utility") -> None:
    """Raise ValueError unless ``u`` scores exactly this dataset's training set.

    Checks the length, the dataset name (when ``u.dataset`` is known) and the labels
    (when ``u`` has them), so a file of another dataset or of another sample order is
    refused instead of silently selecting the wrong images.
    """
    labels = np.asarray(labels)
    if u.num_samples != len(labels):
        raise ValueError(
            f"{source} has {u.num_samples} scores but dataset {dataset_name!r} has "
            f"{len(labels)} training samples (computed on {u.dataset or 'an unknown dataset'}?)")
    if u.dataset and dataset_name and u.dataset.lower() != dataset_name.lower():
        raise ValueError(f"{source} was computed on dataset {u.dataset!r}, not {dataset_name!r}")
    if np.all(u.labels >= 0) and not np.array_equal(u.labels, labels):
        mism = int(np.sum(u.labels != labels))
        raise ValueError(
            f"{source} labels differ from dataset {dataset_name!r} at {mism} positions: "
            "the scores are for another sample order")


__all__ = ["EXPECTED", "FILE_NAME", "Utility", "UtilityFileError", "check_utility", "load_utility",
           "save_utility"]
