"""Training-dynamics indicators: loss (paper 4.2 / 12.4), EL2N and forgetting counts.

One training run gives all three. ``T`` networks are trained from scratch on the whole
training set as ONE program per chunk of trials (a jitted :func:`gold.nn.train_epoch`,
``jax.vmap``-ed over trials on GPU/TPU, or T independent copies in one program on CPU,
where vmapped convolutions of different networks lower to slow grouped convolutions:
``trial_mode``), epoch by epoch: the Python loop only steps epochs, prints
one progress line per epoch and folds each epoch's per-sample record (``[T, N]`` loss,
correctness, EL2N from the forward pass of the minibatch the sample is in, before the
update) into running sums. Trials are processed in chunks of ``trials_per_chunk`` to
bound memory; chunking does not change any number (trial ``t`` always uses
``fold_in(key, t)``). On several devices a chunk's trials are split along the mesh's
``model`` axis (``train_trials(mesh=...)``; ``config.mesh`` in the pipeline), which
does not change any number either.

Key schedule (identical to :func:`gold.nn.fit_many`): trial ``t`` has
``k_t = fold_in(key, t)``, is initialised from ``fold_in(k_t, 0)`` and trains epoch ``e``
with ``split(fold_in(k_t, 1), E)[e]``. So trial 0 of a 50-trial run is the same network
as the single trial of a 1-trial run, and ``fit(...)`` per trial reproduces the vmapped
run.

Indicators (HIGHER = MORE UTILITY everywhere):

* ``loss``: mean loss curve over trials ``[E, N]`` -> Gaussian smoothing along epochs
  (sigma 3, scipy's 'reflect' boundary) -> value after ``epoch`` epochs (default: the
  last) -> utility = minus that loss. Small loss = easy = high utility (paper 4.2).
* ``el2n``: mean over trials of the EL2N score ``||softmax - onehot||`` at an early epoch
  (default ``ceil(E / 10)``, Paul et al. use epoch 20 of 200); utility = -EL2N, so easy
  samples have high utility, the same polarity as the loss indicator.
* ``forgetting``: per trial, the number of correct -> incorrect transitions between
  consecutive epochs (Toneva et al.); a sample never classified correctly counts ``E``
  (more than any possible count, their "forgotten infinitely often"); averaged over
  trials; utility = -forgetting.

Optimiser: the paper gives lr 3e-4 .. 5e-3 and batch 512 but not the optimiser; such
learning rates are Adam's range (SGD at 3e-4 barely moves a ConvNet in 50 epochs), so
the default is Adam without weight decay (``optimizer`` is configurable).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from gold import nn as gnn
from gold import parallel
from gold import progress
from gold.checkpoint import Checkpointer
from gold.utility.smoothing import smoothed_value

LogFn = Callable[[int, dict], None]  # (global epoch step, scalars) -> None

TRIAL_MODES: tuple[str, ...] = ("vmap", "unroll", "auto")


def resolve_trial_mode(mode: str) -> str:
    """``'auto'`` -> ``'unroll'`` on CPU, ``'vmap'`` on GPU/TPU; validates the name."""
    if mode not in TRIAL_MODES:
        raise ValueError(f"trial_mode must be one of {TRIAL_MODES}, got {mode!r}")
    if mode == "auto":
        return "unroll" if jax.default_backend() == "cpu" else "vmap"
    return mode


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How the T classifiers of the loss-family indicators are trained.

    Attributes:
      trials: T networks trained from scratch.
      epochs: E passes over the training set each.
      lr: learning rate (constant).
      batch_size: minibatch size (paper: 512).
      optimizer: ``'adam'`` (default) | ``'adamw'`` | ``'sgd'`` (PyTorch semantics).
      weight_decay: L2 / decoupled decay (0 by default).
      momentum: SGD momentum (ignored by Adam).
      trials_per_chunk: trials trained at once (bounds memory; 0 = all at once).
      trial_mode: how a chunk of trials becomes one program: ``'vmap'``, ``'unroll'`` or
        ``'auto'`` (unroll on CPU, vmap elsewhere); see :func:`make_epoch_fn`.
    """

    trials: int = 50
    epochs: int = 50
    lr: float = 3e-4
    batch_size: int = 512
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    trials_per_chunk: int = 10
    trial_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.trials < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"trials, epochs and batch_size must be >= 1: {self}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.trials_per_chunk < 0:
            raise ValueError(f"trials_per_chunk must be >= 0, got {self.trials_per_chunk}")
        resolve_trial_mode(self.trial_mode)

    def optimizer_fn(self):
        """The optax transformation these settings describe."""
        return gnn.make_optimizer(self.optimizer, self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay)

    def chunks(self) -> list[range]:
        """Trial ranges processed together."""
        size = self.trials if self.trials_per_chunk in (0, None) else self.trials_per_chunk
        return [range(s, min(s + size, self.trials)) for s in range(0, self.trials, size)]


class TrialStats(NamedTuple):
    """Per-sample training statistics of T trials (means over trials).

    Attributes:
      loss_curve: float32 ``[E, N]`` mean cross-entropy of each sample at each epoch.
      correct_curve: float32 ``[E, N]`` fraction of trials classifying it correctly.
      el2n_curve: float32 ``[E, N]`` mean EL2N score.
      forgetting: float32 ``[N]`` mean forgetting count (never learned = E).
      train_loss: float32 ``[T, E]`` mean training loss of each trial and epoch.
      variables: trained variables of trial 0 (None if not kept).
      seconds: wall-clock seconds of the whole run (compilation included).
    """

    loss_curve: np.ndarray
    correct_curve: np.ndarray
    el2n_curve: np.ndarray
    forgetting: np.ndarray
    train_loss: np.ndarray
    variables: Optional[gnn.Variables]
    seconds: float


def trial_keys(key: jax.Array, trials: range | list[int]) -> jax.Array:
    """``[len(trials)]`` keys ``fold_in(key, t)``."""
    return jnp.stack([jax.random.fold_in(key, t) for t in trials])


def init_states(model: nn.Module, tx, keys: jax.Array, input_shape: tuple[int, ...]) -> gnn.TrainState:
    """Fresh stacked :class:`gold.nn.TrainState` of ``len(keys)`` networks (leading axis T).

    Network ``t`` is initialised from ``fold_in(keys[t], 0)`` (as ``fit_many``).
    """

    def one(k):
        v = gnn.init_variables(model, jax.random.fold_in(k, 0), input_shape)
        return gnn.TrainState(v, tx.init(v["params"]))

    return jax.jit(jax.vmap(one))(keys)


def epoch_keys(keys: jax.Array, epochs: int) -> jax.Array:
    """``[T, E]`` epoch keys: ``split(fold_in(keys[t], 1), E)`` (the ``fit_many`` schedule)."""
    return jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 1), epochs))(keys)


def make_epoch_fn(model: nn.Module, tx, batch_size: int, *, vmapped: bool = True,
                  mode: str = "vmap"):
    """Jitted ``(states, keys, x, y) -> (states, mean_loss, SampleRecord)``.

    With ``vmapped=True`` states / keys carry a leading trial axis T and the outputs are
    ``[T]`` and ``[T, N]``; the data ``x [N, ...]``, ``y [N]`` is shared. The states
    argument is donated (updated in place). ``mode`` says how the T trials become one
    program: ``'vmap'`` (``jax.vmap``: convolutions of T different networks become one
    grouped convolution, the fast path on GPU/TPU but ~4x slower than T plain
    convolutions on XLA:CPU) or ``'unroll'`` (T independent copies of the epoch in one
    program, stacked: plain convolutions, and XLA may run the copies concurrently).
    """

    if not vmapped:
        return jax.jit(_one_epoch(model, tx, batch_size), donate_argnums=(0,))
    return jax.jit(_trials_epoch(model, tx, batch_size, mode), donate_argnums=(0,))


def _one_epoch(model: nn.Module, tx, batch_size: int):
    """``(state, key, x, y) -> (state, mean_loss, SampleRecord)`` of one network."""

    def one(state, key, x, y):
        return gnn.train_epoch(model, tx, state, x, y, key, batch_size=batch_size, record=True)

    return one


def _trials_epoch(model: nn.Module, tx, batch_size: int, mode: str):
    """The un-jitted epoch of T trials (leading axis T of states / keys; ``mode`` as in
    :func:`make_epoch_fn`)."""
    one = _one_epoch(model, tx, batch_size)
    if resolve_trial_mode(mode) == "vmap":
        return jax.vmap(one, in_axes=(0, 0, None, None))

    def unrolled(states, keys, x, y):
        t_count = keys.shape[0]
        outs = [one(jax.tree.map(lambda a: a[t], states), keys[t], x, y) for t in range(t_count)]
        return jax.tree.map(lambda *a: jnp.stack(a), *outs)

    return unrolled


def make_sharded_epoch_fn(model: nn.Module, tx, batch_size: int, mesh: Mesh, mode: str = "vmap"):
    """:func:`make_epoch_fn` (``vmapped=True``) with the trials split along ``mesh``'s
    ``model`` axis (``gold.parallel.split_leading``): each device trains its T/n trials
    (``mode`` on its slice); the data is replicated. T must be a multiple of the axis
    size (:func:`train_trials` pads)."""
    body = _trials_epoch(model, tx, batch_size, mode)

    def sharded(states, keys, x, y):
        return parallel.split_leading(body, mesh, "model", (states, keys), (x, y))

    return jax.jit(sharded, donate_argnums=(0,))


@functools.lru_cache(maxsize=32)
def _programs(model: nn.Module, settings: "TrainSettings"):
    """(tx, init program, epoch program) for a model and settings; cached so repeated runs
    with the same model and settings reuse the compiled programs."""
    tx = settings.optimizer_fn()

    def one(k, input_shape):
        v = gnn.init_variables(model, jax.random.fold_in(k, 0), input_shape)
        return gnn.TrainState(v, tx.init(v["params"]))

    init = jax.jit(jax.vmap(one, in_axes=(0, None)), static_argnums=(1,))
    return tx, init, make_epoch_fn(model, tx, settings.batch_size, mode=settings.trial_mode)


@functools.lru_cache(maxsize=8)
def _sharded_epoch(model: nn.Module, settings: "TrainSettings", mesh: Mesh):
    """The cached :func:`make_sharded_epoch_fn` of a model, settings and mesh."""
    return make_sharded_epoch_fn(model, settings.optimizer_fn(), settings.batch_size, mesh,
                                 settings.trial_mode)


def _pad_trials(tree, shards: int):
    """``tree`` (leading axis T) padded to a multiple of ``shards`` with copies of its
    first trials (they fill the last model shards and are dropped)."""
    size = int(jax.tree.leaves(tree)[0].shape[0])
    padded = parallel.padded_size(size, shards)
    if padded == size:
        return tree
    take = jnp.arange(padded) % size
    return jax.tree.map(lambda a: a[take], tree)


def _chunk_record(n: int, size: int) -> dict:
    """Per-chunk forgetting bookkeeping: previous / ever correct, forgetting events."""
    return {"prev": np.zeros((size, n), bool), "ever": np.zeros((size, n), bool),
            "forgot": np.zeros((size, n), np.int32)}


def train_trials(
    model: nn.Module,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    settings: TrainSettings,
    *,
    log: Optional[LogFn] = None,
    keep_first: bool = True,
    checkpointer: Optional[Checkpointer] = None,
    checkpoint_every: int = 1,
    mesh: Optional[Mesh] = None,
) -> TrialStats:
    """Train ``settings.trials`` networks on ``(x, y)`` and average their per-sample records.

    Progress is counted in trial-epochs: step ``s = c * E + e`` is epoch ``e`` (1-based)
    of chunk ``c``; a progress bar (:mod:`gold.progress`) shows it.

    Args:
      model: a Flax classifier (``__call__(x, train) -> logits``).
      x: float32 ``[N, H, W, C]`` normalised training images; y: int ``[N]`` labels.
      key: PRNG key of the run (trial t uses ``fold_in(key, t)``).
      settings: training settings.
      log: called once per epoch (and chunk) with ``(step, {'chunk', 'epoch',
        'train_loss', 'train_acc', 'seconds'})``; ``train_*`` are means over the chunk.
      keep_first: keep trial 0's trained variables (the feature extractor of the
        feature indicators).
      checkpointer: where to save the running sums (and, mid-chunk, the chunk's network
        states) every ``checkpoint_every`` steps and at the end; its newest checkpoint
        is resumed from, giving the same statistics as an uninterrupted run.
      checkpoint_every: steps between checkpoints (0 = only the final one).
      mesh: a ``gold.parallel`` mesh whose ``model`` axis splits each chunk's trials
        (padded with copies of its first trials, which are dropped); None or a model
        axis of 1: one program per chunk. The numbers do not depend on it.
    """
    start = time.time()
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n, e_total = x.shape[0], settings.epochs
    shape = tuple(x.shape[1:])
    program_settings = dataclasses.replace(settings, trials=1, epochs=1, trials_per_chunk=1)
    _, init, epoch_fn = _programs(model, program_settings)
    shards = 1 if mesh is None else parallel.axis_size(mesh, "model")
    if shards > 1:
        epoch_fn = _sharded_epoch(model, program_settings, mesh)
        x, y = parallel.replicate((x, y), mesh)

    def to_mesh(tree):  # a chunk's trials split along the model axis (padded)
        return tree if shards == 1 else parallel.shard_leading(_pad_trials(tree, shards), mesh, "model")

    def own(tree, size: int):  # the chunk's own trials (padding dropped)
        return tree if shards == 1 else jax.tree.map(lambda a: a[:size], tree)
    chunks = settings.chunks()
    total = len(chunks) * e_total
    sums = {"loss": np.zeros((e_total, n), np.float32), "corr": np.zeros((e_total, n), np.float32),
            "el2n": np.zeros((e_total, n), np.float32), "forget": np.zeros(n, np.float32),
            "train_loss": np.zeros((settings.trials, e_total), np.float32)}
    first = None
    step0 = 0 if checkpointer is None else (checkpointer.latest_step() or 0)
    resumed_chunk = None
    if step0:
        c0 = step0 // e_total
        like: dict = {"sums": sums}
        if step0 % e_total:
            states_like = init(trial_keys(key, chunks[c0]), shape)
            like["chunk"] = {"states": states_like, **_chunk_record(n, len(chunks[c0]))}
        if keep_first and step0 >= e_total:
            like["first"] = jax.tree.map(lambda a: a[0], init(trial_keys(key, chunks[0]), shape).variables)
        restored = checkpointer.restore(step0, like)
        sums = {k: np.array(v) for k, v in restored["sums"].items()}
        resumed_chunk = restored.get("chunk")
        first = None if "first" not in restored else jax.tree.map(jnp.asarray, restored["first"])
    bar = progress.bar(total, "utility trial-epochs", initial=step0)
    for c, trials in enumerate(chunks):
        if (c + 1) * e_total <= step0:
            continue  # finished before the checkpoint
        keys = trial_keys(key, trials)
        ekeys = epoch_keys(keys, e_total)
        e_start = step0 - c * e_total if c * e_total < step0 else 0
        if e_start:
            states = jax.tree.map(jnp.asarray, resumed_chunk["states"])
            rec_c = {k: np.array(resumed_chunk[k]) for k in ("prev", "ever", "forgot")}
        else:
            states = init(keys, shape)
            rec_c = _chunk_record(n, len(trials))
        states = to_mesh(states)
        for e in range(e_start, e_total):
            states, mean_loss, rec = epoch_fn(states, to_mesh(ekeys[:, e]), x, y)
            mean_loss, rec = own((mean_loss, rec), len(trials))
            loss_e, corr_e, el2n_e = (np.asarray(a) for a in rec)
            if not np.all(np.isfinite(loss_e)):
                raise FloatingPointError(
                    f"non-finite per-sample loss at epoch {e + 1} (trials {trials.start}.."
                    f"{trials.stop - 1}); lower the learning rate ({settings.lr})")
            sums["loss"][e] += loss_e.sum(0)
            sums["corr"][e] += corr_e.sum(0)
            sums["el2n"][e] += el2n_e.sum(0)
            cur = corr_e > 0.5
            rec_c["forgot"] += (rec_c["prev"] & ~cur)
            rec_c["ever"] |= cur
            rec_c["prev"] = cur
            sums["train_loss"][trials.start:trials.stop, e] = np.asarray(mean_loss)
            step = c * e_total + e + 1
            if log is not None:
                log(step, {"chunk": c, "epoch": e + 1, "train_loss": float(np.mean(mean_loss)),
                           "train_acc": float(corr_e.mean()), "seconds": time.time() - start})
            if e + 1 == e_total:
                sums["forget"] += np.where(rec_c["ever"], rec_c["forgot"], e_total).sum(0)
                if keep_first and c == 0:
                    first = jax.tree.map(lambda a: a[0], states.variables)
            if checkpointer is not None and (step == total or (checkpoint_every and step % checkpoint_every == 0)):
                payload: dict = {"sums": sums}
                if step % e_total:
                    payload["chunk"] = {"states": own(states, len(trials)), **rec_c}
                if first is not None:
                    payload["first"] = first
                checkpointer.save(step, payload)
            bar.update(1)
            bar.set_postfix({"train_loss": float(np.mean(mean_loss))})
        del states
    bar.close()
    t = float(settings.trials)
    return TrialStats(sums["loss"] / t, sums["corr"] / t, sums["el2n"] / t, sums["forget"] / t,
                      sums["train_loss"], first, time.time() - start)


# ---------------------------------------------------------------- scores from records
def default_el2n_epoch(epochs: int) -> int:
    """Early epoch used for EL2N by default: ``max(1, ceil(E / 10))`` (1-based)."""
    return max(1, math.ceil(epochs / 10))


def loss_scores(loss_curve: np.ndarray, sigma: float = 3.0, epoch: int = -1) -> np.ndarray:
    """Loss utility float32 ``[N]`` = minus the smoothed mean loss after ``epoch`` epochs.

    Args:
      loss_curve: ``[E, N]`` mean loss curve over trials.
      sigma: Gaussian smoothing along epochs (0 = none).
      epoch: number of epochs used (1-based, ``-1`` = all): the curve is truncated to
        its first ``epoch`` epochs, smoothed, and its last value taken (paper Table 9).
    """
    return -np.asarray(smoothed_value(np.asarray(loss_curve, np.float64), sigma, epoch), np.float32)


def el2n_scores(el2n_curve: np.ndarray, epoch: int = 0) -> np.ndarray:
    """EL2N utility float32 ``[N]`` = minus the mean EL2N at ``epoch`` (1-based; 0 = the
    default early epoch ``ceil(E/10)``; -1 = last)."""
    e_total = el2n_curve.shape[0]
    e = default_el2n_epoch(e_total) if epoch == 0 else (e_total if epoch == -1 else int(epoch))
    if not 1 <= e <= e_total:
        raise ValueError(f"el2n epoch must be in [1, {e_total}] (or 0/-1), got {epoch}")
    return -np.asarray(el2n_curve[e - 1], np.float32)


def forgetting_scores(forgetting: np.ndarray) -> np.ndarray:
    """Forgetting utility float32 ``[N]`` = minus the mean forgetting count."""
    return -np.asarray(forgetting, np.float32)


__all__ = [
    "TrainSettings", "TrialStats", "default_el2n_epoch", "el2n_scores", "epoch_keys",
    "forgetting_scores", "init_states", "loss_scores", "make_epoch_fn", "train_trials",
    "trial_keys",
]
