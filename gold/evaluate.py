"""Evaluation protocol of a synthetic set (DC / DSA / DM / MTT references).

Train K freshly initialised networks on the synthetic set, all K in one vmapped
program, then measure final-epoch top-1 accuracy on the test set with one batched
test pass over all K networks. Any registered architecture can be evaluated
(cross-architecture generalisation).

On several devices the K networks are split along the ``model`` axis of a
``gold.parallel`` mesh (``jax.shard_map``): each device trains and tests its K/n
networks (K is padded to a multiple of n with extra networks whose results are
dropped). Network k always uses ``split(key, K)[k]``, so the layout changes no random
draw; on one device the plain vmapped program runs, unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from gold import augment as gaug
from gold import models as gmodels
from gold import nn as gnn
from gold import parallel


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How to train and test the K evaluation networks.

    The default schedule is that of the DC / DSA / DM / MTT references
    (``evaluate_synset``): with ``Epoch = epochs`` they train ``Epoch + 1`` epochs
    (``for ep in range(Epoch + 1)``) and, after the epoch with index ``Epoch // 2 + 1``,
    multiply the lr by 0.1 AND build a new SGD optimiser (momentum buffer reset). So
    ``epochs=300`` trains 301 epochs, 152 at ``lr`` then 149 at ``lr / 10`` from zero
    momentum. Each epoch is the references' ``DataLoader(shuffle=True)`` pass: the last
    minibatch is smaller, not padded (:func:`gold.nn.train_epoch`), so BatchNorm
    statistics never see repeated samples.

    Attributes:
      model: architecture name (see ``gold.models.model_names()``).
      model_overrides: constructor overrides, e.g. ``(("width", 32),)``.
      num_models: K, networks trained from different random inits.
      epochs: the references' ``epoch_eval_train`` (300; 1000 with augmentation); the
        networks train ``epochs + 1`` epochs (:meth:`train_epochs`).
      batch_size: minibatch size (256).
      lr, momentum, weight_decay: PyTorch-style SGD (0.01, 0.9, 5e-4).
      lr_decay_epochs: numbers of epochs completed before each lr drop (default
        ``(epochs // 2 + 2,)``, the references' drop after epoch index ``epochs//2 + 1``).
      lr_decay: factor of each drop (0.1).
      momentum_reset: each drop starts a fresh optimiser (zero momentum), as the
        references do; False keeps one optimiser with a step schedule.
      augment: ``none`` | ``dsa`` | ``dc_mnist`` (crop/scale/rotate, per sample).
      dsa_strategy: DSA op groups when ``augment == 'dsa'``.
      test_batch_size: batch of the test pass.
    """

    model: str = "convnet"
    model_overrides: tuple[tuple[str, object], ...] = ()
    num_models: int = 5
    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epochs: Optional[tuple[int, ...]] = None
    lr_decay: float = 0.1
    momentum_reset: bool = True
    augment: str = "none"
    dsa_strategy: str = gaug.DEFAULT_STRATEGY
    test_batch_size: int = 1000

    def train_epochs(self) -> int:
        """Epochs actually trained: ``epochs + 1`` (the references' ``range(Epoch + 1)``)."""
        return self.epochs + 1

    def decay_epochs(self) -> tuple[int, ...]:
        """Epochs completed before each lr drop (default ``epochs // 2 + 2``)."""
        if self.lr_decay_epochs is not None:
            return self.lr_decay_epochs
        return (self.epochs // 2 + 2,)

    def to_dict(self) -> dict:
        """JSON-friendly description, stored with every synthetic set."""
        d = dataclasses.asdict(self)
        d["model_overrides"] = dict(self.model_overrides)
        d["lr_decay_epochs"] = list(self.decay_epochs())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalProtocol":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["model_overrides"] = tuple(sorted(dict(d.get("model_overrides", {})).items()))
        if d.get("lr_decay_epochs") is not None:
            d["lr_decay_epochs"] = tuple(d["lr_decay_epochs"])
        return cls(**d)


def training_phases(protocol: EvalProtocol, lr: jax.Array, steps_per_epoch: int) -> list[gnn.Phase]:
    """The SGD phases of ``protocol`` for a base learning rate ``lr`` (may be traced).

    With ``momentum_reset`` (default): one phase per stretch between lr drops, the
    i-th at the constant ``lr * lr_decay**i``, each with a fresh optimiser. Without:
    one phase of ``train_epochs()`` epochs and a step schedule (one optimiser).
    """
    total = protocol.train_epochs()
    bounds = sorted({min(max(int(e), 0), total) for e in protocol.decay_epochs()})
    if not protocol.momentum_reset:
        schedule = gnn.step_decay(1.0, steps_per_epoch, tuple(bounds), protocol.lr_decay)
        tx = gnn.sgd(lambda step: lr * schedule(step), protocol.momentum, protocol.weight_decay)
        return [gnn.Phase(tx, total)]
    edges = [0, *bounds, total]
    return [
        gnn.Phase(gnn.sgd(lambda step, f=protocol.lr_decay ** i: lr * f, protocol.momentum,
                          protocol.weight_decay), end - start)
        for i, (start, end) in enumerate(zip(edges[:-1], edges[1:]))
    ]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Test accuracies in percent of the K networks, their mean / std, wall seconds."""

    accuracies: np.ndarray
    mean: float
    std: float
    seconds: float


def train_networks(
    protocol: EvalProtocol,
    num_classes: int,
    keys: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    lr: jax.Array,
) -> tuple[nn.Module, gnn.Variables]:
    """Train ``len(keys)`` fresh networks on ``(x_syn, y_syn)`` as one vmapped program
    (``gold.nn.fit_phases_many`` through :func:`training_phases`); pure and jittable
    (``protocol`` and ``num_classes`` static).

    Args:
      protocol: evaluation protocol (model, epochs, SGD, augmentation).
      num_classes: number of classes K of the logits.
      keys: ``[K]`` PRNG keys, one per network (init, shuffling, augmentation).
      x_syn: ``[M, H, W, C]`` training images; y_syn: ``[M]`` int labels or ``[M, K]``
        soft labels.
      lr: float32 scalar learning rate (a learned lr, or ``protocol.lr``).

    Returns:
      (the model, its variables with a leading axis K).
    """
    model = gmodels.get_model(
        protocol.model, num_classes, x_syn.shape[1:], **dict(protocol.model_overrides)
    )
    steps_per_epoch = gnn.num_batches(x_syn.shape[0], protocol.batch_size)
    augment = gaug.get_augment(protocol.augment, strategy=protocol.dsa_strategy)
    trained = gnn.fit_phases_many(
        model, training_phases(protocol, lr, steps_per_epoch), keys, x_syn, y_syn,
        batch_size=protocol.batch_size, augment=augment,
    )
    return model, trained.variables


def train_and_test(
    protocol: EvalProtocol,
    num_classes: int,
    keys: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    lr: jax.Array,
) -> jax.Array:
    """:func:`train_networks`, then one batched test pass over all K networks:
    ``[K]`` accuracies in [0, 1] on ``x_test [N, H, W, C]``, int ``y_test [N]``."""
    model, variables = train_networks(protocol, num_classes, keys, x_syn, y_syn, lr)
    return gnn.accuracy_many(model, variables, x_test, y_test, protocol.test_batch_size)


@functools.lru_cache(maxsize=32)
def _compiled(protocol: EvalProtocol, num_classes: int):
    return jax.jit(functools.partial(train_and_test, protocol, num_classes))


@functools.lru_cache(maxsize=32)
def _compiled_sharded(protocol: EvalProtocol, num_classes: int, mesh: Mesh):
    """:func:`train_and_test` with the keys split along ``model``: each device trains
    and tests its own networks; the synthetic and test sets are replicated."""
    rep = PartitionSpec()
    fn = jax.shard_map(functools.partial(train_and_test, protocol, num_classes), mesh=mesh,
                       in_specs=(PartitionSpec("model"), rep, rep, rep, rep, rep),
                       out_specs=PartitionSpec("model"),
                       # gold's custom-VJP convolutions do not type varying manual axes; the
                       # body is per-network, so each device's output is its own shard
                       check_vma=False)
    return jax.jit(fn)


def evaluation_mesh(num_models: int, requested=None, devices=None) -> Mesh:
    """The mesh of a K-model evaluation: ``gold.parallel.make_mesh`` preferring the
    ``model`` axis, at most ``num_models`` model shards (``requested``: ``config.mesh``)."""
    return parallel.make_mesh(requested, devices=devices, prefer="model",
                              max_size={"model": max(1, int(num_models))})


def train_and_test_on(mesh: Optional[Mesh], protocol: EvalProtocol, num_classes: int, keys: jax.Array,
                      x_syn: jax.Array, y_syn: jax.Array, x_test: jax.Array, y_test: jax.Array,
                      lr: jax.Array) -> jax.Array:
    """:func:`train_and_test` (jitted) with the K networks split along ``mesh``'s
    ``model`` axis; ``None`` or a model axis of 1 runs the plain single-program path.

    Raises:
      ValueError: more model shards than networks.
    """
    k = int(keys.shape[0])
    shards = 1 if mesh is None else parallel.axis_size(mesh, "model")
    args = (jnp.asarray(x_syn), jnp.asarray(y_syn), jnp.asarray(x_test),
            jnp.asarray(y_test, jnp.int32), jnp.float32(lr))
    if shards == 1:
        return _compiled(protocol, int(num_classes))(keys, *args)
    if shards > k:
        raise ValueError(f"{shards} model shards but only {k} evaluation networks; "
                         f"lower mesh.model or raise eval.num_models")
    padded = parallel.padded_size(k, shards)
    if padded > k:  # extra networks (copies of the first keys) fill the last shards; dropped
        keys = jnp.concatenate([keys, keys[: padded - k]])
    keys = jax.device_put(keys, parallel.along(mesh, "model"))
    args = parallel.replicate(args, mesh)
    acc = _compiled_sharded(protocol, int(num_classes), mesh)(keys, *args)
    return acc[:k]


def evaluate_synthetic(
    key: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    protocol: EvalProtocol = EvalProtocol(),
    lr: Optional[float] = None,
    mesh: Optional[Mesh] = None,
) -> EvalResult:
    """Train ``protocol.num_models`` fresh networks on ``(x_syn, y_syn)`` and test them.

    Args:
      key: PRNG key; network k uses ``split(key, K)[k]``.
      x_syn: ``[M, H, W, C]`` synthetic images (same normalisation as ``x_test``).
      y_syn: int ``[M]`` labels or float ``[M, num_classes]`` soft labels.
      x_test, y_test: ``[N, H, W, C]`` test images and int ``[N]`` labels.
      lr: learning rate overriding ``protocol.lr`` (MTT's learned synthetic lr).
      mesh: a ``gold.parallel`` mesh whose ``model`` axis splits the K networks;
        default :func:`evaluation_mesh` over all devices (one device: unsharded).

    Returns:
      EvalResult with accuracies in percent.

    Raises:
      ValueError: mismatched shapes, negative soft labels, more model shards than
        networks.
    """
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"synthetic images {x_syn.shape[1:]} and test images {x_test.shape[1:]} differ in shape")
    if x_syn.shape[0] != y_syn.shape[0]:
        raise ValueError(f"{x_syn.shape[0]} synthetic images but {y_syn.shape[0]} labels")
    if np.ndim(y_syn) == 2 and float(np.min(np.asarray(y_syn))) < 0:
        raise ValueError(
            "the synthetic labels have negative entries (e.g. centred learned labels): the "
            "evaluation trains with soft-label cross-entropy, which has no minimum for them. "
            "Distil with learn_labels=False, or keep labels non-negative")
    start = time.time()
    if mesh is None:
        mesh = evaluation_mesh(protocol.num_models)
    keys = jax.random.split(key, protocol.num_models)
    lr_value = jnp.float32(protocol.lr if lr is None else lr)
    acc = train_and_test_on(mesh, protocol, int(num_classes), keys, x_syn, y_syn, x_test, y_test,
                            lr_value)
    acc = np.asarray(acc, np.float64) * 100.0
    if not np.all(np.isfinite(acc)):
        raise FloatingPointError("evaluation produced non-finite accuracies")
    return EvalResult(acc, float(acc.mean()), float(acc.std()), time.time() - start)
