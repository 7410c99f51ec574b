"""The loss indicator over a streamed dataset (``gold.data.stream``), resumable by chunk.

Same indicator as :mod:`gold.utility.loss` (``T`` networks trained from scratch, the mean
per-sample loss curve over trials, Gaussian-smoothed along epochs, utility = minus its
last value), but the data never sits in memory: each epoch is ONE shuffled pass over the
kept samples (``gold.data.stream.epoch_batches``, order from ``(seed, epoch)``) and every
batch read trains all ``T`` networks (the reads are shared by the trials; the in-memory
indicator shuffles each trial separately). A batch's per-sample losses come from the
forward pass before the update (``gold.nn.train_step``) and are written, as the mean over
trials, into a ``[E, N]`` float32 memory-mapped curve on disk (``curve.f32``), keyed by
the sample's column (its rank among the kept ids), so host memory holds one batch and
the networks, not the curve.

Resumable by chunk: every ``chunk_batches`` batches the network states and the position
``(epoch, batch)`` are checkpointed (the curve file is flushed first); a rerun restores
them and recomputes from there (curve entries are assigned, not accumulated, so a
recomputed chunk writes the same values). The result is a :class:`gold.utility.Utility`
with ``ids`` = the stable sample ids, saved as ``utility.npz`` in ``workdir``.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gold import nn as gnn
from gold.checkpoint import Checkpointer
from gold.data import stream as gstream
from gold.utility.artifact import Utility, save_utility
from gold.utility.loss import TrainSettings, init_states, loss_scores, resolve_trial_mode, trial_keys

CURVE = "curve.f32"
SCORE_BLOCK = 65536  # columns smoothed at a time


@functools.lru_cache(maxsize=8)
def _programs(model: Any, settings: TrainSettings, shape: tuple[int, ...], mean: tuple, std: tuple):
    """(tx, train) for a model and settings, cached so that a resumed or repeated run in
    the same process reuses the compiled program.

    ``train(states, x uint8 [B, ...], y [B]) -> (states,
    losses [T, B])``: one step of every trial on the same batch, normalised on the device.
    """
    tx = settings.optimizer_fn()

    def one(state, x, y):
        state, losses, _ = gnn.train_step(model, tx, state, x, y)
        return state, losses

    def run(states, x, y):
        x = gstream.normalize(x, mean, std)
        if resolve_trial_mode(settings.trial_mode) == "vmap":
            return jax.vmap(one, in_axes=(0, None, None))(states, x, y)
        outs = [one(jax.tree.map(lambda a: a[t], states), x, y) for t in range(settings.trials)]
        return jax.tree.map(lambda *a: jnp.stack(a), *outs)

    return tx, jax.jit(run, donate_argnums=(0,))


def stream_loss_utility(model: Any, source: Any, kept_ids: Optional[np.ndarray], key: jax.Array,
                        settings: TrainSettings, *, workdir: str, mean, std, seed: int = 0,
                        dataset: str = "", chunk_batches: int = 0, sigma: float = 3.0,
                        read_threads: int = 2, prefetch: int = 2) -> Utility:
    """Loss utility of the kept samples of a streamed source.

    Args:
      model: a Flax classifier for the source's samples (``convnet`` family, or
        ``convnet_gru`` for clips).
      source: a ``gold.data.stream`` source; kept_ids: sample ids to score (None = all).
      key: PRNG key (trial ``t`` is initialised from ``fold_in(fold_in(key, t), 0)``).
      settings: trials, epochs, lr, batch_size, optimiser, trial_mode (``trials_per_chunk``
        is not used: all trials share each read).
      workdir: where ``curve.f32``, the checkpoints and ``utility.npz`` go.
      mean, std: channel statistics in [0, 1] units.
      seed: the data-order seed (epoch ``e`` uses ``(seed, e)``).
      dataset: dataset name stored with the scores.
      chunk_batches: batches between checkpoints (0 = once per epoch).
      sigma: Gaussian smoothing of the loss curve along epochs.

    Returns:
      the :class:`Utility` (also saved to ``workdir/utility.npz``).
    """
    import grain

    start_time = time.time()
    os.makedirs(workdir, exist_ok=True)
    positions = gstream.kept_positions(source, kept_ids)
    n, e_total, b = len(positions), settings.epochs, min(settings.batch_size, len(positions))
    column = np.empty(len(source), np.int64)
    column[positions] = np.arange(n)
    path = os.path.join(workdir, CURVE)
    curve = np.memmap(path, np.float32, "r+" if os.path.exists(path) else "w+", shape=(e_total, n))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    per_epoch = -(-n // b)
    every = chunk_batches or per_epoch
    done = ckpt.latest_step() or 0  # batches finished, over all epochs
    if done < e_total * per_epoch:  # a finished run's scores need the curve only, not the networks
        tx, train = _programs(model, settings, tuple(source.shape), tuple(float(m) for m in mean),
                              tuple(float(v) for v in std))
        states = init_states(model, tx, trial_keys(key, range(settings.trials)), tuple(source.shape))
        if done:
            states = jax.tree.map(jnp.asarray, ckpt.restore(done, states))
    for e in range(done // per_epoch, e_total):
        first = done - e * per_epoch if e * per_epoch < done else 0
        order, _ = gstream.epoch_order(positions, seed, e, b)
        batches = gstream.epoch_batches(source, positions, seed, e, b)[first:]
        reads = batches.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
        for i, batch in enumerate(reads, start=first):
            keep = batch.mask > 0  # the padded tail is trained as a smaller batch
            states, losses = train(states, batch.x[keep], batch.y[keep])
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"non-finite loss at epoch {e + 1}; lower the lr ({settings.lr})")
            curve[e, column[order[i][keep]]] = losses.mean(0)
            step = e * per_epoch + i + 1
            if step % every == 0 or i + 1 == per_epoch:
                curve.flush()
                ckpt.save(step, states)
    curve.flush()
    ckpt.close()
    scores = np.concatenate([loss_scores(np.asarray(curve[:, s:s + SCORE_BLOCK]), sigma)
                             for s in range(0, n, SCORE_BLOCK)])
    ids = np.asarray(source.ids)[positions]
    labels = np.asarray(source.labels)[positions]
    meta = {"trials": settings.trials, "epochs": e_total, "lr": settings.lr, "batch_size": b,
            "optimizer": settings.optimizer, "sigma": sigma, "streamed": True, "num_kept": n}
    u = Utility(scores, labels, ids, "loss", dataset, meta, seed, time.time() - start_time)
    save_utility(os.path.join(workdir, "utility.npz"), u)
    return u


__all__ = ["stream_loss_utility"]
