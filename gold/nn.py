"""Training primitives shared by every stage: per-sample losses, one SGD step, `fit`.

Everything here is a pure function of (model, variables, data, key). Many networks
(utility trials, evaluation models, MTT experts) are trained at once with `fit_many`,
which is `fit` vmapped over PRNG keys, so K networks cost one compiled program.

Shapes: images ``x`` are float32 ``[N, H, W, C]``; labels ``y`` are int32 ``[N]``
(hard labels) or float32 ``[N, num_classes]`` (soft labels / learned labels).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

Variables = Any  # a Flax variable dict: {'params': ..., optionally 'batch_stats': ...}
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x[B,...]) -> x_aug[B,...]
# (key, x[B,...], y[B,K]) -> (x_mix[B,...], y_mix[B,K]): a batch transform that also
# changes the labels (CutMix).
MixFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# (outputs[B,K], labels[B] or [B,K]) -> per-sample losses [B].
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------- losses
def per_sample_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Cross-entropy of each sample, float32 ``[B]`` (nats).

    Args:
      logits: ``[B, K]`` unnormalised scores.
      labels: int ``[B]`` class indices, or float ``[B, K]`` target distributions.
    """
    if labels.ndim == logits.ndim:
        return optax.softmax_cross_entropy(logits, labels)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def per_sample_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Squared error of each sample, ``0.5 * sum_k (outputs - targets)**2``, float32 ``[B]``.

    The regression loss of KIP / FRePo evaluations (FRePo's ``mean_squared_loss``; its
    minibatch loss is the mean over samples).

    Args:
      outputs: ``[B, K]`` network outputs.
      targets: float ``[B, K]`` regression targets (e.g. centred one-hot labels).
    """
    if targets.shape != outputs.shape:
        raise ValueError(f"squared error needs float [B, K] targets of the outputs' shape "
                         f"{outputs.shape}; got {targets.shape}")
    return 0.5 * jnp.sum(jnp.square(outputs - targets), axis=-1)


def per_sample_el2n(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """EL2N score: L2 norm of (softmax(logits) - onehot(label)), float32 ``[B]``."""
    target = labels if labels.ndim == logits.ndim else jax.nn.one_hot(labels, logits.shape[-1])
    return jnp.linalg.norm(jax.nn.softmax(logits) - target, axis=-1)


def hard_labels(labels: jax.Array) -> jax.Array:
    """int ``[B]`` class indices from hard (``[B]``) or soft (``[B, K]``) labels."""
    return jnp.argmax(labels, axis=-1) if labels.ndim == 2 else labels


# ------------------------------------------------------------------------ model calls
def init_variables(model: nn.Module, key: jax.Array, input_shape: tuple[int, ...]) -> Variables:
    """Fresh variables of ``model`` for inputs of shape ``[*, *input_shape]``."""
    return model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False)


def apply_model(
    model: nn.Module, variables: Variables, x: jax.Array, train: bool
) -> tuple[jax.Array, Variables]:
    """Logits ``[B, K]`` and the variables after the call.

    In training mode, models with BatchNorm update their ``batch_stats``; all other
    collections are returned unchanged.
    """
    if train and "batch_stats" in variables:
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        return logits, {**variables, **updates}
    return model.apply(variables, x, train=train), variables


def count_params(variables: Variables) -> int:
    """Number of trainable scalars in ``variables['params']``."""
    return sum(int(p.size) for p in jax.tree.leaves(variables["params"]))


# ------------------------------------------------------------------------- optimisers
def sgd(
    lr: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> optax.GradientTransformation:
    """PyTorch-style SGD: ``g += wd * p``; ``buf = m * buf + g``; ``p -= lr * buf``."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(lr, momentum=momentum if momentum else None),
    )


def step_decay(lr: float, steps_per_epoch: int, decay_epochs: tuple[int, ...], factor: float) -> optax.Schedule:
    """Piecewise-constant schedule: ``lr`` multiplied by ``factor`` at each epoch boundary.

    From step ``e * steps_per_epoch`` on (after ``e`` epochs), for every ``e`` in
    ``decay_epochs``; a repeated epoch multiplies twice (PyTorch ``MultiStepLR``).
    """
    drops: dict[int, float] = {}
    for e in decay_epochs:
        if e > 0:
            step = int(e * steps_per_epoch)
            drops[step] = drops.get(step, 1.0) * factor
    return optax.piecewise_constant_schedule(lr, drops)


def warmup_cosine(total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> optax.Schedule:
    """Unit-lr schedule: linear warm-up from 0, then cosine decay to ``final_fraction``.

    Step ``s`` (0-based count of updates done): ``s / warmup_steps`` while
    ``s < warmup_steps``; then ``a + (1 - a) * (1 + cos(pi * t)) / 2`` with
    ``t = min(s - warmup_steps, D) / D``, ``D = max(total_steps - warmup_steps, 1)`` and
    ``a = final_fraction`` (FRePo's ``optax.join_schedules`` of ``linear_schedule`` and
    ``cosine_decay_schedule(alpha=a)``). Multiply by the base lr (which may be traced).
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warm-up of {warmup_steps} steps does not fit {total_steps} steps")
    decay = max(total_steps - warmup_steps, 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        t = jnp.clip((step - warmup_steps) / decay, 0.0, 1.0)
        cosine = final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
        return jnp.where(step < warmup_steps, step / max(warmup_steps, 1), cosine)

    return schedule


def make_optimizer(
    name: str,
    lr: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Optimiser by name: ``sgd`` (PyTorch semantics) or ``adam`` / ``adamw``."""
    if name == "sgd":
        return sgd(lr, momentum, weight_decay)
    if name == "adam":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
    if name == "adamw":
        return optax.adamw(lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; valid: adam, adamw, sgd")


# ----------------------------------------------------------------------------- batches
def num_batches(n: int, batch_size: int) -> int:
    """Minibatches per epoch when every one of ``n`` samples is seen once."""
    return max(1, math.ceil(n / batch_size))


def epoch_split(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A shuffled epoch as PyTorch's ``DataLoader(shuffle=True, drop_last=False)`` cuts it.

    Returns:
      full: int32 ``[n // b, b]`` sample indices of the full minibatches;
      tail: int32 ``[n % b]`` indices of the smaller last minibatch (empty when ``b``
        divides ``n``), with ``b = min(batch_size, n)``. Every sample appears once.
    """
    b = min(batch_size, n)
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    nf = n // b
    return perm[: nf * b].reshape(nf, b), perm[nf * b:]


# -------------------------------------------------------------------------- training
class TrainState(NamedTuple):
    """Variables and optimiser state of one network."""

    variables: Variables
    opt_state: optax.OptState


class SampleRecord(NamedTuple):
    """Per-sample training statistics, each float32 ``[epochs, N]``.

    Recorded from the forward pass of the minibatch a sample is in (before the
    update), so they cost nothing extra: ``loss`` (cross-entropy), ``correct``
    (1.0 if the argmax is right), ``el2n`` (error L2 norm).
    """

    loss: jax.Array
    correct: jax.Array
    el2n: jax.Array


class FitResult(NamedTuple):
    """Output of :func:`fit`: final variables, mean train loss per epoch ``[E]``, and
    the per-sample record (None unless ``record=True``)."""

    variables: Variables
    epoch_loss: jax.Array
    record: Optional[SampleRecord]


def train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    loss: Optional[LossFn] = None,
) -> tuple[TrainState, jax.Array, jax.Array]:
    """One optimiser step on the mean loss of a minibatch.

    Args:
      x: ``[B, ...]`` images; y: ``[B]`` or ``[B, K]`` labels.
      loss: per-sample loss ``(logits [B, K], y) -> [B]``; default
        :func:`per_sample_cross_entropy`.

    Returns:
      (new state, per-sample losses ``[B]``, logits ``[B, K]``), both from the forward
      pass before the update.
    """

    def loss_fn(params):
        logits, new_vars = apply_model(model, {**state.variables, "params": params}, x, train=True)
        losses = (loss or per_sample_cross_entropy)(logits, y)
        return jnp.mean(losses), (losses, logits, new_vars)

    params = state.variables["params"]
    grads, (losses, logits, new_vars) = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    new_vars = {**new_vars, "params": optax.apply_updates(params, updates)}
    return TrainState(new_vars, opt_state), losses, logits


def train_epoch(
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    augment: Optional[AugmentFn] = None,
    record: bool = False,
    loss: Optional[LossFn] = None,
    mix: Optional[MixFn] = None,
) -> tuple[TrainState, jax.Array, Optional[SampleRecord]]:
    """One shuffled pass over ``(x, y)``; jittable.

    The minibatches are those of :func:`epoch_split` (shuffle key ``split(key)[0]``):
    a ``lax.scan`` over the full ones, then one step on the smaller last one, as the
    PyTorch references' ``DataLoader`` does; so BatchNorm statistics and the mean loss
    of the last step cover exactly its samples.

    Args:
      x: ``[N, ...]`` images; y: ``[N]`` or ``[N, K]`` labels.
      key: PRNG key for the shuffle and ``augment(key, xb)``.
      record: also return every sample's loss / correctness / EL2N, each ``[N]``.
      loss: per-sample training loss (:func:`train_step`; default cross-entropy).
      mix: applied after ``augment`` to each minibatch and its (float ``[B, K]``)
        labels, with the batch's augmentation key folded with 1 (``augment``'s own
        draws do not change when ``mix`` is added).

    Returns:
      (state, mean train loss of the epoch over its N samples, per-sample record or None).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    n = x.shape[0]
    k_batches, k_aug = jax.random.split(key)
    full, tail = epoch_split(k_batches, n, batch_size)
    aug_keys = jax.random.split(k_aug, full.shape[0] + 1)

    def run_batch(state, inputs):
        b_idx, b_key = inputs
        xb, yb = x[b_idx], y[b_idx]
        if augment is not None:
            xb = augment(b_key, xb)
        if mix is not None:
            xb, yb = mix(jax.random.fold_in(b_key, 1), xb, yb)
        state, losses, logits = train_step(model, tx, state, xb, yb, loss)
        if not record:
            return state, (losses,)
        correct = (jnp.argmax(logits, -1) == hard_labels(yb)).astype(jnp.float32)
        return state, (losses, correct, per_sample_el2n(logits, yb))

    state, stats = jax.lax.scan(run_batch, state, (full, aug_keys[:-1]))
    order = full.reshape(-1)
    stats = [s.reshape(-1) for s in stats]
    if tail.shape[0]:
        state, tail_stats = run_batch(state, (tail, aug_keys[-1]))
        order = jnp.concatenate([order, tail])
        stats = [jnp.concatenate([s, t]) for s, t in zip(stats, tail_stats)]
    mean_loss = jnp.mean(stats[0])
    if not record:
        return state, mean_loss, None
    per_sample = [jnp.zeros(n, jnp.float32).at[order].set(s) for s in stats]  # dataset order
    return state, mean_loss, SampleRecord(*per_sample)


class Phase(NamedTuple):
    """A stretch of ``epochs`` epochs trained with optimiser ``tx``; its state starts
    fresh (zero momentum), as a new ``torch.optim.SGD`` in the PyTorch references."""

    tx: optax.GradientTransformation
    epochs: int


def fit_phases(
    model: nn.Module,
    phases: Sequence[Phase],
    variables: Variables,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    augment: Optional[AugmentFn] = None,
    record: bool = False,
    loss: Optional[LossFn] = None,
    mix: Optional[MixFn] = None,
) -> FitResult:
    """Train one network through ``phases`` in order; pure and jittable.

    Epoch ``e`` (counted over all phases) is a :func:`train_epoch` with key
    ``split(key, total_epochs)[e]``; each phase is a ``lax.scan`` over its epochs and
    starts from ``phase.tx.init`` (the optimiser state does not carry over). With
    ``record=True`` every sample's loss, correctness and EL2N are kept for every epoch
    (``[total_epochs, N]``; the loss / forgetting / EL2N indicators). ``loss`` and
    ``mix``: see :func:`train_epoch`.
    """
    epoch_keys = jax.random.split(key, sum(p.epochs for p in phases))
    losses, records, start = [], [], 0
    for phase in phases:

        def run_epoch(state, epoch_key, tx=phase.tx):
            state, mean_loss, rec = train_epoch(
                model, tx, state, x, y, epoch_key,
                batch_size=batch_size, augment=augment, record=record, loss=loss, mix=mix,
            )
            return state, (mean_loss, rec)

        state = TrainState(variables, phase.tx.init(variables["params"]))
        state, (phase_loss, rec) = jax.lax.scan(run_epoch, state, epoch_keys[start:start + phase.epochs])
        variables, start = state.variables, start + phase.epochs
        losses.append(phase_loss)
        records.append(rec)
    record_all = SampleRecord(*(jnp.concatenate(f) for f in zip(*records))) if record else None
    return FitResult(variables, jnp.concatenate(losses), record_all)


def fit(
    model: nn.Module,
    tx: optax.GradientTransformation,
    variables: Variables,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    epochs: int,
    batch_size: int,
    augment: Optional[AugmentFn] = None,
    record: bool = False,
) -> FitResult:
    """Train one network for ``epochs`` passes over ``(x, y)`` with one optimiser
    (:func:`fit_phases` with one phase); pure and jittable."""
    return fit_phases(model, [Phase(tx, epochs)], variables, x, y, key,
                      batch_size=batch_size, augment=augment, record=record)


def fit_phases_many(
    model: nn.Module,
    phases: Sequence[Phase],
    keys: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    batch_size: int,
    augment: Optional[AugmentFn] = None,
    record: bool = False,
    loss: Optional[LossFn] = None,
    mix: Optional[MixFn] = None,
) -> FitResult:
    """Train ``K = len(keys)`` freshly initialised networks at once (vmapped
    :func:`fit_phases`).

    Network k is initialised from ``fold_in(keys[k], 0)`` and trained with
    ``fold_in(keys[k], 1)``, exactly as a sequential loop over the keys would. The
    data is shared, not copied. Every leaf of the result has a leading axis ``K``.
    """
    input_shape = x.shape[1:]

    def one(k):
        variables = init_variables(model, jax.random.fold_in(k, 0), input_shape)
        return fit_phases(
            model, phases, variables, x, y, jax.random.fold_in(k, 1),
            batch_size=batch_size, augment=augment, record=record, loss=loss, mix=mix,
        )

    return jax.vmap(one)(keys)


def fit_many(
    model: nn.Module,
    tx: optax.GradientTransformation,
    keys: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    epochs: int,
    batch_size: int,
    augment: Optional[AugmentFn] = None,
    record: bool = False,
) -> FitResult:
    """:func:`fit_phases_many` with one optimiser for ``epochs`` epochs."""
    return fit_phases_many(model, [Phase(tx, epochs)], keys, x, y,
                           batch_size=batch_size, augment=augment, record=record)


# ------------------------------------------------------------------------- inference
def predict_many(
    model: nn.Module, variables: Variables, x: jax.Array, batch_size: int = 1000
) -> jax.Array:
    """Logits of K networks (variables with a leading axis K) on ``x``: ``[K, N, classes]``.

    The test pass is batched over ALL K networks at once (one scan over data batches,
    vmap over networks), so the data is read once per batch, not once per network.
    """
    n = x.shape[0]
    b = min(batch_size, n)
    nb = num_batches(n, b)
    pad = nb * b - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    forward = jax.vmap(lambda v, xb: model.apply(v, xb, train=False), in_axes=(0, None))

    def body(_, xb):
        return None, forward(variables, xb)

    _, logits = jax.lax.scan(body, None, xp.reshape(nb, b, *x.shape[1:]))
    k = logits.shape[1]
    return jnp.moveaxis(logits, 1, 0).reshape(k, nb * b, -1)[:, :n]


def accuracy_many(
    model: nn.Module, variables: Variables, x: jax.Array, y: jax.Array, batch_size: int = 1000
) -> jax.Array:
    """Top-1 accuracy in [0, 1] of each of K networks on ``(x, y)``: float32 ``[K]``."""
    logits = predict_many(model, variables, x, batch_size)
    return jnp.mean(jnp.argmax(logits, -1) == y[None, :], axis=-1)


def stack_variables(variables_list: list[Variables]) -> Variables:
    """Stack K single-network variable trees into one tree with a leading axis K."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *variables_list)


def unstack_variables(variables: Variables, k: int) -> Variables:
    """Variables of network ``k`` from a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[k], variables)


__all__ = [
    "AugmentFn", "FitResult", "LossFn", "MixFn", "SampleRecord", "TrainState", "Variables",
    "Phase", "accuracy_many", "apply_model", "count_params", "epoch_split", "fit",
    "fit_many", "fit_phases", "fit_phases_many", "hard_labels", "init_variables", "make_optimizer", "num_batches",
    "per_sample_cross_entropy", "per_sample_el2n", "per_sample_squared_error", "predict_many", "sgd",
    "stack_variables", "step_decay", "train_epoch", "train_step", "unstack_variables", "warmup_cosine",
]
