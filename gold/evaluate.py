"""Evaluation protocol of a synthetic set (DC / DSA / DM / MTT references).

Train K freshly initialised networks on the synthetic set, all K in one vmapped
program, then measure final-epoch top-1 accuracy on the test set with one batched
test pass over all K networks. Any registered architecture can be evaluated
(cross-architecture generalisation).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gold import augment as gaug
from gold import models as gmodels
from gold import nn as gnn


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How to train and test the K evaluation networks.

    Attributes:
      model: architecture name (see ``gold.models.model_names()``).
      model_overrides: constructor overrides, e.g. ``(("width", 32),)``.
      num_models: K, networks trained from different random inits.
      epochs: training epochs on the synthetic set (300; 1000 with augmentation).
      batch_size: minibatch size (256).
      lr, momentum, weight_decay: PyTorch-style SGD (0.01, 0.9, 5e-4).
      lr_decay_epochs: epochs at which lr is multiplied by ``lr_decay`` (default: half).
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
    augment: str = "none"
    dsa_strategy: str = gaug.DEFAULT_STRATEGY
    test_batch_size: int = 1000

    def decay_epochs(self) -> tuple[int, ...]:
        """Epochs at which the lr drops (default: half of ``epochs``)."""
        return self.lr_decay_epochs if self.lr_decay_epochs is not None else (self.epochs // 2,)

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


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Test accuracies in percent of the K networks, their mean / std, wall seconds."""

    accuracies: np.ndarray
    mean: float
    std: float
    seconds: float


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
    """Train ``len(keys)`` fresh networks on ``(x_syn, y_syn)`` and test them: ``[K]``
    accuracies in [0, 1]. Pure and jittable (``protocol`` and ``num_classes`` static);
    the K networks train as one vmapped program (``gold.nn.fit_many``).

    Args:
      protocol: evaluation protocol (model, epochs, SGD, augmentation).
      num_classes: number of classes K of the logits.
      keys: ``[K]`` PRNG keys, one per network (init, shuffling, augmentation).
      x_syn: ``[M, H, W, C]`` training images; y_syn: ``[M]`` int labels or ``[M, K]``
        soft labels.
      x_test: ``[N, H, W, C]``; y_test: ``[N]`` int labels.
      lr: float32 scalar learning rate (a learned lr, or ``protocol.lr``).
    """
    model = gmodels.get_model(
        protocol.model, num_classes, x_syn.shape[1:], **dict(protocol.model_overrides)
    )
    steps_per_epoch = gnn.num_batches(x_syn.shape[0], protocol.batch_size)
    schedule = gnn.step_decay(1.0, steps_per_epoch, protocol.decay_epochs(), protocol.lr_decay)
    tx = gnn.sgd(lambda step: lr * schedule(step), protocol.momentum, protocol.weight_decay)
    augment = gaug.get_augment(protocol.augment, strategy=protocol.dsa_strategy)
    trained = gnn.fit_many(
        model, tx, keys, x_syn, y_syn,
        epochs=protocol.epochs, batch_size=protocol.batch_size, augment=augment,
    )
    return gnn.accuracy_many(model, trained.variables, x_test, y_test, protocol.test_batch_size)


@functools.lru_cache(maxsize=32)
def _compiled(protocol: EvalProtocol, num_classes: int):
    return jax.jit(functools.partial(train_and_test, protocol, num_classes))


def evaluate_synthetic(
    key: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    protocol: EvalProtocol = EvalProtocol(),
    lr: Optional[float] = None,
) -> EvalResult:
    """Train ``protocol.num_models`` fresh networks on ``(x_syn, y_syn)`` and test them.

    Args:
      key: PRNG key; network k uses ``split(key, K)[k]``.
      x_syn: ``[M, H, W, C]`` synthetic images (same normalisation as ``x_test``).
      y_syn: int ``[M]`` labels or float ``[M, num_classes]`` soft labels.
      x_test, y_test: ``[N, H, W, C]`` test images and int ``[N]`` labels.
      lr: learning rate overriding ``protocol.lr`` (MTT's learned synthetic lr).

    Returns:
      EvalResult with accuracies in percent.
    """
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"synthetic images {x_syn.shape[1:]} and test images {x_test.shape[1:]} differ in shape")
    if x_syn.shape[0] != y_syn.shape[0]:
        raise ValueError(f"{x_syn.shape[0]} synthetic images but {y_syn.shape[0]} labels")
    start = time.time()
    keys = jax.random.split(key, protocol.num_models)
    lr_value = jnp.float32(protocol.lr if lr is None else lr)
    acc = _compiled(protocol, int(num_classes))(
        keys, jnp.asarray(x_syn), jnp.asarray(y_syn), jnp.asarray(x_test),
        jnp.asarray(y_test, jnp.int32), lr_value,
    )
    acc = np.asarray(acc, np.float64) * 100.0
    if not np.all(np.isfinite(acc)):
        raise FloatingPointError("evaluation produced non-finite accuracies")
    return EvalResult(acc, float(acc.mean()), float(acc.std()), time.time() - start)
