"""Pieces shared by every distillation algorithm.

* :class:`RealData`: the selected real images as a pytree (a ``jit`` argument, not a
  compile-time constant) with a padded class-index table for class-balanced sampling
  inside ``jit`` (``gold.data.ClassIndex``) and the per-class real batch after the
  paper's halving rule (``gold.data.class_batch_size``).
* :func:`real_class_batch`: one class's real batch + validity weights.
* The parameterisation ``params -> (images, labels, lr)``: :class:`SyntheticSpec`
  around an image parameterisation (:class:`Pixels`; grid crops, bases and
  hallucinators implement the same two methods). Learned labels and a learned lr are
  ordinary entries of ``params`` with their own optimiser. Images are class-major:
  the ``m = per_class`` images of class c are rows ``[c*m, (c+1)*m)``.
* :class:`DistillState` (what the loop checkpoints), :class:`Algorithm` (what an
  algorithm module's ``make`` returns), :class:`Synthetic`.
* :func:`per_class_value_and_grad`: loop over classes inside ``jit`` (``lax.map`` or an
  unrolled Python loop; never ``vmap``, which lowers per-class network gradients to
  grouped convolutions: 3x slower and 8 GB on CPU) returning each class's loss and the
  gradient w.r.t. that class's synthetic images.
* :func:`train_network`: ``epochs`` passes of SGD on a (synthetic) set, e.g. DC's inner
  loop.
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

from gold import augment as gaug
from gold import data as gdata
from gold import nn as gnn
from gold import parallel
from gold.distill.settings import check_choice, check_positive, setting

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


def has_batchnorm(model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """True when ``model`` carries BatchNorm statistics (shape-only probe, no compute)."""
    probe = jax.eval_shape(lambda: gnn.init_variables(model, jax.random.key(0), input_shape))
    return "batch_stats" in probe


# ------------------------------------------------------------------ parameterisation
INIT_MODES: tuple[str, ...] = ("real", "noise")


def check_real_init(real: RealData, per_class: int) -> None:
    """ValueError when a class keeps fewer than ``per_class`` real images (real init
    draws distinct images). Called once on the host when an algorithm is built, so
    that ``init`` itself stays traceable."""
    counts = real.class_counts()
    small = [(c, int(n)) for c, n in enumerate(counts) if n < per_class]
    if small:
        raise ValueError(
            f"real init needs {per_class} distinct images per class but class(es) "
            f"{[c for c, _ in small]} keep only {[n for _, n in small]} after selection; "
            f"lower ipc, raise selection.ratio, or use init='noise'")


def init_real_images(key: jax.Array, real: RealData, per_class: int) -> jax.Array:
    """``per_class`` distinct random real images of every class, class-major ``[K*m, ...]``
    (traceable; class sizes are checked by :func:`check_real_init`)."""
    x, _ = real_all_classes(real, key, per_class)
    return x


class ImageParameterization(Protocol):
    """How the synthetic images are stored: ``params -> images`` (pixels now; grid
    crops, bases x addressing matrices, hallucinators plug in here)."""

    per_class: int  # decoded images per class (class-major layout)

    def init(self, key: jax.Array, real: RealData, mode: str) -> PyTree:
        """Initial learnable parameters (``mode``: 'real' | 'noise')."""

    def decode(self, params: PyTree) -> jax.Array:
        """Decoded images ``[K * per_class, H, W, C]`` (differentiable)."""


@dataclasses.dataclass(frozen=True)
class Pixels:
    """Plain learnable pixels: ``params = {'x': [K*ipc, H, W, C]}``.

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


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """The whole learnable synthetic set: ``params -> (images, labels, lr)``.

    ``params`` is a dict with ``'images'`` (the image parameterisation's pytree) and,
    when learned, ``'labels'`` (float32 ``[M, K]`` label vectors, initialised one-hot
    times ``label_scale``) and ``'lr'`` (float32 scalar, the evaluation / student
    learning rate, initialised at ``lr_init``). Labels that are not learned are the hard
    labels ``[0]*m + [1]*m + ...``; an lr that is not learned is None (the protocol's).
    Each top-level entry gets its own optimiser (:meth:`optimizer`).

    Attributes:
      images: the image parameterisation (:class:`Pixels`, ...).
      num_classes: K.
      learn_labels: learn soft labels.
      label_scale: value of the true class in the initial label vectors.
      softmax_labels: the learned vectors are logits and the labels are their softmax
        (always a distribution, for cross-entropy students and evaluations); otherwise
        the learned vectors are the labels (regression targets of kernel methods).
      lr_init: initial learned lr; None = the lr is not learned.
    """

    images: ImageParameterization
    num_classes: int
    learn_labels: bool = False
    label_scale: float = 1.0
    softmax_labels: bool = False
    lr_init: Optional[float] = None

    @property
    def per_class(self) -> int:
        """Decoded images per class."""
        return self.images.per_class

    def hard_labels(self) -> jax.Array:
        """int32 ``[K * per_class]`` class of every decoded image."""
        return jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), self.per_class)

    def init(self, key: jax.Array, real: RealData, mode: str) -> PyTree:
        """Initial parameters (images from ``mode``; one-hot labels; ``lr_init``)."""
        params = {"images": self.images.init(key, real, mode)}
        if self.learn_labels:
            params["labels"] = self.label_scale * jax.nn.one_hot(self.hard_labels(), self.num_classes)
        if self.lr_init is not None:
            params["lr"] = jnp.float32(self.lr_init)
        return params

    def images_of(self, params: PyTree) -> jax.Array:
        """Decoded images ``[M, H, W, C]``."""
        return self.images.decode(params["images"])

    def labels_of(self, params: PyTree) -> jax.Array:
        """Learned float32 ``[M, K]`` labels (the softmax of the learned logits with
        ``softmax_labels``), or the int32 ``[M]`` hard labels."""
        if not self.learn_labels:
            return self.hard_labels()
        return jax.nn.softmax(params["labels"]) if self.softmax_labels else params["labels"]

    def lr_of(self, params: PyTree) -> Optional[jax.Array]:
        """The learned lr (float32 scalar) or None."""
        return params["lr"] if self.lr_init is not None else None

    def decode(self, params: PyTree) -> "Synthetic":
        """``Synthetic(images, labels, lr)``."""
        return Synthetic(self.images_of(params), self.labels_of(params), self.lr_of(params))

    def optimizer(self, images: optax.GradientTransformation,
                  labels: Optional[optax.GradientTransformation] = None,
                  lr: Optional[optax.GradientTransformation] = None) -> optax.GradientTransformation:
        """Per-entry optimisers (``optax.multi_transform``) over :meth:`init`'s params.

        Raises:
          ValueError: a learned entry without its optimiser.
        """
        transforms = {"images": images}
        if self.learn_labels:
            if labels is None:
                raise ValueError("learned labels need an optimiser (set lr_labels > 0)")
            transforms["labels"] = labels
        if self.lr_init is not None:
            if lr is None:
                raise ValueError("a learned lr needs an optimiser")
            transforms["lr"] = lr
        return optax.multi_transform(transforms, lambda params: {k: k for k in params})


# --------------------------------------------------------------------- state & types
@struct.dataclass
class DistillState:
    """Everything a distillation run carries from step to step (checkpointed).

    Attributes:
      params: learnable synthetic parameters (:meth:`SyntheticSpec.init`'s dict:
        images, and learned labels / lr when the algorithm learns them).
      opt_state: optimiser state of ``params`` (per-entry, ``optax.multi_transform``).
      iteration: int32 scalar, number of completed steps.
      extra: algorithm-specific carried state that is not learned by gradient (e.g. a
        network pool); an empty dict for DC / DSA / DM / MTT.
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
    ``[M, K]``), the learned evaluation lr (None when not learned), and the stored
    factors of a factorised parameterisation (``{name: array}``, e.g. HaBa's bases and
    hallucinators, written to ``synthetic.npz`` next to ``x``; None for pixels)."""

    x: jax.Array
    y: jax.Array
    lr: Optional[jax.Array] = None
    factors: Optional[dict] = None


class Algorithm(NamedTuple):
    """What an algorithm's ``make(settings, config, real)`` returns to the loop.

    Attributes:
      name: algorithm name as in the literature (``dc``, ``dsa``, ``dm``, ...).
      init: ``(key, real) -> DistillState``; traceable (``vmap``-able over keys).
      step: ``(state, key, real) -> (state, metrics)``; pure; one call = one reference
        iteration; leaves ``state.iteration`` alone (``gold.distill.engine.advance``
        counts, and the step may read it as the index of the current iteration);
        ``metrics['loss']`` and every other metric is a float32 scalar.
      synthetic: ``state -> Synthetic``.
      settings: JSON-friendly dict of the resolved hyper-parameters (logged / saved).
    """

    name: str
    init: Callable[[jax.Array, RealData], DistillState]
    step: Callable[[DistillState, jax.Array, RealData], tuple[DistillState, dict]]
    synthetic: Callable[[DistillState], Synthetic]
    settings: dict


@dataclasses.dataclass(frozen=True)
class BaseSettings:
    """Settings every algorithm has (subclassed by each algorithm's settings)."""

    ipc: int = setting(1, "synthetic images per class")
    iterations: int = setting(1000, "distillation iterations (0 = evaluate the initial set)")
    init: str = setting("noise", "initial synthetic images: real (random kept images) | noise")

    def validate(self) -> None:
        """ValueError on a bad value (called by ``settings.from_config``)."""
        if self.ipc < 1:
            raise ValueError(f"ipc must be >= 1, got {self.ipc}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        check_choice("init", self.init, INIT_MODES)

    def real_images_per_class(self) -> int:
        """Distinct real images per class that real init draws (``ipc`` for pixels)."""
        return self.ipc


@dataclasses.dataclass(frozen=True)
class PixelSGDSettings(BaseSettings):
    """Settings of algorithms that learn pixels by SGD and augment with DSA (DC, DSA,
    DM, MTT). A subclass changes a default with ``lr_img: float = 1.0``."""

    lr_img: float = setting(0.1, "SGD learning rate of the synthetic images")
    momentum_img: float = setting(0.5, "SGD momentum of the synthetic images")
    dsa_strategy: str = setting(gaug.DEFAULT_STRATEGY, "DSA op groups ('none' = no augmentation)")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        gaug.parse_strategy(self.dsa_strategy)


@dataclasses.dataclass(frozen=True)
class NetworkTrainingSettings:
    """Mixin: a network trained on the synthetic set between image updates (DC, DSA;
    IDC's net)."""

    lr_net: float = setting(0.01, "SGD learning rate of the network between outer loops")
    momentum_net: float = setting(0.0, "SGD momentum of the network (reference: none)")
    batch_train: int = setting(256, "minibatch of synthetic images when training the network")


@dataclasses.dataclass(frozen=True)
class ClassMatchingSettings(PixelSGDSettings):
    """Settings of algorithms that match every class separately (DC, DSA, DM)."""

    class_loop: str = setting("map", "loop over classes in jit: map (lax.map) | unroll")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        check_choice("class_loop", self.class_loop, CLASS_LOOPS)
        check_positive(lr_img=self.lr_img)


def sgd(lr: float, momentum: float) -> optax.GradientTransformation:
    """SGD on synthetic parameters, PyTorch semantics, no weight decay."""
    return gnn.sgd(lr, momentum, 0.0)


def apply_update(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                 grads: PyTree) -> tuple[PyTree, PyTree]:
    """One optimiser step on the synthetic parameters."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def image_gradient_step(tx: optax.GradientTransformation, spec: SyntheticSpec,
                        state: DistillState, image_grad: Callable[[jax.Array], tuple[jax.Array, Any]],
                        ) -> tuple[DistillState, Any]:
    """Update ``state`` from a loss that sees only the decoded images.

    ``image_grad(images [M, H, W, C]) -> (d loss / d images, aux)``; the gradient is
    pulled back through the image parameterisation (``jax.vjp`` of the decode) and one
    ``tx`` step is taken. Returns (the state with updated ``params`` / ``opt_state``,
    ``aux``); the iteration counter is the engine's (``gold.distill.engine``).
    """
    images, decode_vjp = jax.vjp(lambda p: spec.images_of(p), state.params)
    gx, aux = image_grad(images)
    (grads,) = decode_vjp(gx)
    params, opt_state = apply_update(tx, state.params, state.opt_state, grads)
    return state.replace(params=params, opt_state=opt_state), aux


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

    When the step runs on a mesh with a ``class`` axis of size n
    (``gold.parallel.replicated_program``) the classes are split along it
    (``gold.parallel.split_map``): each device loops over its K/n classes, whose image
    gradients are local, and the per-class losses and gradients are all-gathered. Keys
    fold in the global class index, so the numbers equal the one-device loop.
    """
    if class_loop not in CLASS_LOOPS:
        raise ValueError(f"unknown class_loop {class_loop!r}; valid: {CLASS_LOOPS}")
    vg = jax.value_and_grad(fn, argnums=1)

    def one(c, x_c):
        return vg(c, x_c, jax.random.fold_in(key, c))

    def loop(classes, xs):  # the classes of one device (all of them without a class axis)
        if class_loop == "map":
            return jax.lax.map(lambda a: one(*a), (classes, xs))
        outs = [one(classes[i], xs[i]) for i in range(classes.shape[0])]
        return jnp.stack([o[0] for o in outs]), jnp.stack([o[1] for o in outs])

    classes = jnp.arange(x_by_class.shape[0], dtype=jnp.int32)
    return parallel.split_map(loop, "class", classes, x_by_class)


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


def storage_floats(params: PyTree) -> int:
    """Numbers a synthetic set stores: every learned entry of ``params`` (images or
    their factors, learned labels, learned lr). Factorised parameterisations are
    compared with pixels at an equal value of this (or of it per class)."""
    return int(sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree.leaves(params)))


def tree_all_finite(tree: PyTree) -> jax.Array:
    """bool scalar: every entry of every float leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(l).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


__all__ = [
    "Algorithm", "BaseSettings", "CLASS_LOOPS", "ClassMatchingSettings", "NetworkTrainingSettings",
    "PixelSGDSettings", "DistillState", "INIT_MODES", "ImageParameterization",
    "Pixels", "RealData", "Synthetic", "SyntheticSpec", "apply_update", "check_real_init",
    "has_batchnorm", "image_gradient_step", "init_real_images", "make_real_data",
    "per_class_value_and_grad", "real_all_classes", "real_class_batch", "sgd", "train_network",
    "tree_all_finite",
]
