"""Named random streams: every key a run derives from its seed, in one place.

A run with ``seed`` starts from ``root = jax.random.key(seed)`` and gives each stage
its own stream, ``jax.random.fold_in(root, STREAMS[name])``:

* ``selection``: which real samples are kept (the selection policy and any utility
  computed on the fly); the expert buffer uses the same stream so that experts and
  distillation keep the same samples;
* ``init``: the initial synthetic set;
* ``steps``: distillation step ``i`` uses ``step_key(steps, i) = fold_in(steps, i)``,
  so a resumed run draws exactly what an uninterrupted one would;
* ``eval``: the evaluation networks;
* ``experts``: MTT expert ``i`` uses ``fold_in(experts, i)``;
* ``features``: the classifier behind diversity / outlier features of an analysis.

Inside a stage, its parts have named sub-streams (:data:`SUBSTREAMS`,
:func:`substream`): the selection's policy, on-the-fly indicator, random scores and
analysis features; the utility's trials, K-means and default init images; a coreset's
classifier and method. Per-element keys (class c, trial t, expert i) fold the element's
global index into their stream. The numbers are part of the results' reproducibility:
never renumber a stream.
"""

from __future__ import annotations

import jax

STREAMS: dict[str, int] = {
    "selection": 1,
    "init": 2,
    "steps": 3,
    "eval": 4,
    "experts": 7,
}

SUBSTREAMS: dict[str, int] = {
    "selection.policy": 0,
    "selection.indicator": 1,
    "selection.random_scores": 2,
    "selection.features": 7,
    "utility.trials": 0,
    "utility.kmeans": 1,
    "utility.init_images": 2,
    "coreset.classifier": 0,
    "coreset.method": 1,
}


def root(seed: int) -> jax.Array:
    """The run's root key ``jax.random.key(seed)``."""
    return jax.random.key(int(seed))


def stream(key: jax.Array, name: str) -> jax.Array:
    """The named stream of ``key`` (a run's root key).

    Raises:
      KeyError: unknown stream name (lists the valid ones).
    """
    if name not in STREAMS:
        raise KeyError(f"unknown random stream {name!r}; valid: {sorted(STREAMS)}")
    return jax.random.fold_in(key, STREAMS[name])


def seed_stream(seed: int, name: str) -> jax.Array:
    """``stream(root(seed), name)``."""
    return stream(root(seed), name)


def substream(key: jax.Array, name: str) -> jax.Array:
    """The named sub-stream of a stage's key (:data:`SUBSTREAMS`, e.g. ``'utility.trials'``).

    Raises:
      KeyError: unknown name (lists the valid ones).
    """
    if name not in SUBSTREAMS:
        raise KeyError(f"unknown random sub-stream {name!r}; valid: {sorted(SUBSTREAMS)}")
    return jax.random.fold_in(key, SUBSTREAMS[name])


def step_key(steps: jax.Array, iteration) -> jax.Array:
    """Key of distillation step ``iteration`` (int or traced int32) in the ``steps`` stream."""
    return jax.random.fold_in(steps, iteration)


__all__ = ["STREAMS", "SUBSTREAMS", "root", "seed_stream", "step_key", "stream", "substream"]
