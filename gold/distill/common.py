"""Pieces shared by every distillation algorithm.

* :class:`RealData`: the selected real images as a pytree (a ``jit`` argument, not a
  compile-time constant) with a padded class-index table for class-balanced sampling
  inside ``jit`` (``gold.data.ClassIndex``) and the per-class real batch after the
  paper's halving rule (``gold.data.class_batch_size``).
* :func:`real_class_batch`: one class's real batch + validity weights.
* Parameterisations ``params -> (images, labels)`` (:class:`Pixels`; IDC's grid crops,
  LinBa's bases and HaBa's hallucinators implement the same three methods). Images
  are class-major: the ``m = per_class`` images of class c are rows
  ``[c*m, (c+1)*m)``.
* :class:`DistillState` (what the loop checkpoints), :class:`Algorithm` (the contract
  between an algorithm module and ``loop.py``), :class:`Synthetic`.
* :func:`per_class_value_and_grad`: loop over classes inside ``jit`` (``lax.map`` or an
  unrolled Python loop; never ``vmap``, which lowers per-class network gradients to
  grouped convolutions: 3x slower and 8 GB on CPU) returning each class's loss and the
  gradient w.r.t. that class's synthetic images.
* :func:`train_network`: ``epochs`` passes of SGD on a (synthetic) set, e.g. DC's inner
  loop; the "net pool" of IDC / IDM / FRePo trains its networks with it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from gold import config_utils
from gold import data as gdata
from gold import models as gmodels
from gold import nn as gnn

PyTree = Any


# ------------------------------------------------------------------------ real data
@struct.dataclass
class RealData:
    """Selected real training data as a ``jit``-able pytree.

    Attributes:
      x: float32 ``[N, H, W, C]`` normalised images (only the kept samples).
      y: int32 ``[N]`` labels.
      index: ``gold.data.ClassIndex`` (table ``[K, max_count]`` of positions in ``x``,
        counts ``[K]``).
      num_classes: K (static).
      batch: real batch per class after the halving rule (static).
    """

    x: jax.Array
    y: jax.Array
    index: gdata.ClassIndex
    num_classes: int = struct.field(pytree_node=False)
    batch: int = struct.field(pytree_node=False)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W, C)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_real(self) -> int:
        """N, the number of real samples the run can see."""
        return int(self.x.shape[0])

    def class_counts(self) -> np.ndarray:
        """int ``[K]`` samples per class (host copy)."""
        return np.asarray(self.index.counts)


def config_ipc(config: Any) -> int:
    """``config.ipc`` as an int; ValueError unless >= 1 (shared by every algorithm)."""
    ipc = int(config.ipc)
    if ipc < 1:
        raise ValueError(f"ipc must be >= 1, got {ipc}")
    return ipc


def make_real_data(x: np.ndarray, y: np.ndarray, num_classes: int, batch_real: int) -> RealData:
    """Build :class:`RealData` from kept images ``x [N, H, W, C]`` and labels ``y [N]``.

    The per-class batch is ``gold.data.class_batch_size(batch_real, class counts)``
    (paper supp. 12.3: halve 256 until it is < twice the largest class).

    Raises:
      ValueError: a class without any kept sample, or ``batch_real < 1``.
    """
    y = np.asarray(y, np.int32)
    index = gdata.ClassIndex.from_labels(y, num_classes)
    counts = np.asarray(index.counts)
    empty = [c for c in range(num_classes) if counts[c] == 0]
    if empty:
        raise ValueError(f"classes {empty} have no real samples after selection; "
                         f"raise selection.ratio or check the data")
    if int(batch_real) < 1:
        raise ValueError(f"batch_real must be >= 1, got {batch_real}")
    batch = gdata.class_batch_size(int(batch_real), counts.tolist())
    return RealData(jnp.asarray(x, jnp.float32), jnp.asarray(y), index, int(num_classes), int(batch))


def real_class_batch(real: RealData, key: jax.Array, c: jax.Array | int,
                     n: Optional[int] = None) -> tuple[jax.Array, jax.Array]:
    """A class-balanced real batch drawn without replacement inside ``jit``.

    Args:
      real: the real data.
      key: PRNG key.
      c: class id (Python int or traced int32).
      n: batch size (static); default ``real.batch``.

    Returns:
      images ``[n, H, W, C]`` and float32 weights ``[n]``: 1 for the first
      ``min(n, count_c)`` distinct draws, 0 for the repeats that pad a small class
      (so a weighted mean equals the reference's mean over ``permutation[:n]``).
    """
    n = real.batch if n is None else int(n)
    idx = real.index.sample(key, c, n)
    mask = real.index.valid_mask(c, n).astype(jnp.float32)
    return real.x[idx], mask


def real_all_classes(real: RealData, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` real images of every class: ``[K*n, H, W, C]`` (class-major), weights ``[K*n]``."""
    keys = jax.random.split(key, real.num_classes)
    xs, ms = jax.vmap(lambda k, c: real_class_batch(real, k, c, n))(keys, jnp.arange(real.num_classes))
    return xs.reshape(-1, *xs.shape[2:]), ms.reshape(-1)


def build_model(model_cfg: Any, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """``gold.config_utils.build_model`` plus the optional ``model.conv_impl`` field
    (``auto`` | ``shifted`` | ``xla``; ConvNet family only)."""
    impl = model_cfg.get("conv_impl", "") if hasattr(model_cfg, "get") else ""
    if not impl or not str(model_cfg.name).startswith("convnet"):
        return config_utils.build_model(model_cfg, num_classes, input_shape)
    return gmodels.get_model(model_cfg.name, num_classes, input_shape, conv_impl=impl,
                             **config_utils.model_overrides(model_cfg))


# ------------------------------------------------------------------ parameterisation
class Parameterization(Protocol):
    """``params -> (images, labels)``: how a synthetic set is stored and learned."""

    per_class: int  # decoded images per class (class-major layout)

    def init(self, key: jax.Array, real: RealData, mode: str) -> PyTree:
        """Initial learnable parameters (``mode``: 'real' | 'noise')."""

    def decode(self, params: PyTree) -> jax.Array:
        """Decoded images ``[K * per_class, H, W, C]`` (differentiable)."""

    def labels(self) -> jax.Array:
        """int32 ``[K * per_class]`` labels of the decoded images."""


INIT_MODES: tuple[str, ...] = ("real", "noise")


def init_real_images(key: jax.Array, real: RealData, per_class: int) -> jax.Array:
    """``per_class`` distinct random real images of every class, class-major ``[K*m, ...]``.

    Raises:
      ValueError: (outside ``jit``) when a class has fewer than ``per_class`` samples.
    """
    counts = real.class_counts()
    small = [(c, int(n)) for c, n in enumerate(counts) if n < per_class]
    if small:
        raise ValueError(
            f"real init needs ipc={per_class} distinct images per class but class(es) "
            f"{[c for c, _ in small]} keep only {[n for _, n in small]} after selection; "
            f"lower ipc, raise selection.ratio, or use init='noise'")
    x, _ = real_all_classes(real, key, per_class)
    return x


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Plain learnable pixels: ``params = {'x': [K*ipc, H, W, C]}`` (DC, DSA, DM, MTT).

    Noise init is N(0, 1) in normalised units (the references' ``torch.randn``).
    """

    num_classes: int
    ipc: int
    image_shape: tuple[int, ...]

    @property
    def per_class(self) -> int:
        """Images per class."""
        return self.ipc

    def init(self, key: jax.Array, real: RealData, mode: str) -> PyTree:
        """``{'x': ...}`` from random real images (``real``) or Gaussian noise (``noise``)."""
        if mode == "real":
            return {"x": init_real_images(key, real, self.ipc)}
        if mode == "noise":
            return {"x": jax.random.normal(key, (self.num_classes * self.ipc, *self.image_shape))}
        raise ValueError(f"unknown init {mode!r}; valid: {INIT_MODES}")

    def decode(self, params: PyTree) -> jax.Array:
        """The pixels themselves."""
        return params["x"]

    def labels(self) -> jax.Array:
        """``[0]*ipc + [1]*ipc + ...``."""
        return jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), self.ipc)


# --------------------------------------------------------------------- state & types
@struct.dataclass
class DistillState:
    """Everything a distillation run carries from step to step (checkpointed).

    Attributes:
      params: learnable synthetic parameters (``Parameterization`` pytree).
      opt_state: optimiser state of ``params``.
      iteration: int32 scalar, number of completed steps.
      extra: algorithm-specific carried state (e.g. a network pool, a learned lr);
        an empty dict for DC / DSA / DM.
    """

    params: PyTree
    opt_state: PyTree
    iteration: jax.Array
    extra: PyTree = dataclasses.field(default_factory=dict)

    @classmethod
    def start(cls, params: PyTree, tx: optax.GradientTransformation,
              extra: Optional[PyTree] = None) -> "DistillState":
        """State at iteration 0: ``params`` with a fresh ``tx`` optimiser state."""
        return cls(params, tx.init(params), jnp.zeros((), jnp.int32),
                   {} if extra is None else extra)


class Synthetic(NamedTuple):
    """A decoded synthetic set: images ``x [M, H, W, C]``, labels ``y [M]`` (or soft
    ``[M, K]``), and the learned evaluation lr (None when not learned)."""

    x: jax.Array
    y: jax.Array
    lr: Optional[jax.Array] = None


class Algorithm(NamedTuple):
    """What an algorithm module's ``make(config, real)`` returns to the loop.

    Attributes:
      name: algorithm name as in the literature (``dc``, ``dsa``, ``dm``, ...).
      init: ``(key, real) -> DistillState``.
      step: ``(state, key, real) -> (state, metrics)``; pure, jitted by the loop; one
        call = one reference iteration; ``metrics['loss']`` is a float32 scalar.
      synthetic: ``state -> Synthetic``.
      settings: JSON-friendly dict of the resolved hyper-parameters (logged / saved).
    """

    name: str
    init: Callable[[jax.Array, RealData], DistillState]
    step: Callable[[DistillState, jax.Array, RealData], tuple[DistillState, dict]]
    synthetic: Callable[[DistillState], Synthetic]
    settings: dict


def image_optimizer(lr: float, momentum: float) -> optax.GradientTransformation:
    """SGD on synthetic images, PyTorch semantics, no weight decay."""
    return gnn.sgd(lr, momentum, 0.0)


def apply_image_update(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                       grads: PyTree) -> tuple[PyTree, PyTree]:
    """One optimiser step on the synthetic parameters."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# ------------------------------------------------------------------ per-class loops
CLASS_LOOPS: tuple[str, ...] = ("map", "unroll")


def per_class_value_and_grad(
    fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    x_by_class: jax.Array,
    key: jax.Array,
    class_loop: str = "map",
) -> tuple[jax.Array, jax.Array]:
    """Each class's loss and its gradient w.r.t. that class's synthetic images.

    Args:
      fn: ``(c int32 scalar, x_c [m, ...], key) -> scalar loss`` of class c.
      x_by_class: ``[K, m, ...]`` synthetic images grouped by class.
      key: PRNG key; class c uses ``fold_in(key, c)``.
      class_loop: ``map`` (``lax.map``: the class body is compiled once) or ``unroll``
        (a Python loop inside ``jit``: K copies, longer compile, lets XLA overlap
        classes).

    Returns:
      losses float32 ``[K]`` and gradients ``[K, m, ...]``.
    """
    k = x_by_class.shape[0]
    vg = jax.value_and_grad(fn, argnums=1)

    def one(args):
        c, x_c = args
        return vg(c, x_c, jax.random.fold_in(key, c))

    classes = jnp.arange(k, dtype=jnp.int32)
    if class_loop == "map":
        return jax.lax.map(one, (classes, x_by_class))
    if class_loop == "unroll":
        outs = [one((classes[c], x_by_class[c])) for c in range(k)]
        return jnp.stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs])
    raise ValueError(f"unknown class_loop {class_loop!r}; valid: {CLASS_LOOPS}")


# -------------------------------------------------------------- network training
def train_network(
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: gnn.TrainState,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    epochs: int,
    batch_size: int,
    augment: Optional[gnn.AugmentFn] = None,
) -> gnn.TrainState:
    """``epochs`` shuffled passes of SGD over ``(x, y)`` (``lax.scan`` of
    ``gold.nn.train_epoch``); the reference's ``for il in range(inner_loop): epoch(...)``.

    ``x`` is treated as data (gradients do not flow into it); BatchNorm statistics are
    updated in training mode as in PyTorch's ``net.train()``.
    """
    x = jax.lax.stop_gradient(x)

    def body(st, k):
        st, _, _ = gnn.train_epoch(model, tx, st, x, y, k, batch_size=batch_size, augment=augment)
        return st, None

    state, _ = jax.lax.scan(body, state, jax.random.split(key, epochs))
    return state


def tree_all_finite(tree: PyTree) -> jax.Array:
    """bool scalar: every entry of every float leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(l).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


__all__ = [
    "Algorithm", "build_model", "CLASS_LOOPS", "DistillState", "INIT_MODES", "Parameterization", "Pixels",
    "RealData", "Synthetic", "apply_image_update", "image_optimizer", "init_real_images",
    "make_real_data", "per_class_value_and_grad", "real_all_classes", "real_class_batch",
    "train_network", "tree_all_finite",
]
