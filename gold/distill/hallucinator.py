"""Factorised synthetic images: bases x hallucinators (HaBa, Liu et al., NeurIPS 2022).

Reference Huage001/DatasetFactorization (``utils.StyleTranslator``, ``distill_fac.py``).
A synthetic image is ``hallucinate(hallucinator_j, base_i)``: ``b`` learned bases per
class (images ``[H, W, C]``, real-initialised) are shared by ``h`` small networks
(5 in the ref), each

    conv 3x3 (C -> C, no padding)  ->  per-pixel affine (scale, shift ``[H-2, W-2, C]``,
    initialised 1, 0)  ->  transposed conv 3x3 (C -> C, stride 1, no padding: back to H x W).

The transposed convolution is computed as a convolution with full padding (2 on every
side): the same family of maps (the ref's kernel, spatially flipped, with input and
output channels swapped). Initial weights and biases follow ``torch.nn.Conv2d`` /
``ConvTranspose2d``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = 9 * C``.

:class:`Hallucinated` implements ``common.ImageParameterization``. Its params are
``{'bases': [K*b, H, W, C], 'hallucinators': {name: [h, ...]}}`` (hallucinator leaves
stacked over the ``h`` networks). ``decode`` gives every (base, hallucinator)
combination, class-major, ``per_class = b * h`` rows per class ordered base-major: row
``(c*b + i) * h + j`` is base ``i`` of class ``c`` through hallucinator ``j``.
:meth:`Hallucinated.minibatch` decodes chosen bases through a chosen hallucinator per
sample (the ref's one hallucinator per student minibatch passes the same index for
every row).

Storage (numbers stored): ``K*b*H*W*C`` for the bases plus ``h`` times
:func:`hallucinator_size` ``= 2*(9*C*C + C) + 2*(H-2)*(W-2)*C`` for the networks.
:func:`bases_for_budget` picks the largest ``b`` whose storage does not exceed that of
``ipc`` pixel images per class (``ipc*K*H*W*C``); when even one base per class does not
fit (IPC 1 on MNIST / CIFAR-10 with 5 hallucinators) it returns 1, the ref's setting,
and the run reports its larger storage.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gold.distill import common

PyTree = Any
KERNEL = 3
_DIMS = ("NHWC", "HWIO", "NHWC")


# ------------------------------------------------------------------- one network
def hallucinator_size(image_shape: tuple[int, ...]) -> int:
    """Numbers in one hallucinator for images ``(H, W, C)``: two 3x3 convolutions with
    bias (``9*C*C + C`` each) and the per-pixel affine (``2 * (H-2) * (W-2) * C``)."""
    h, w, c = image_shape
    return 2 * (KERNEL * KERNEL * c * c + c) + 2 * (h - KERNEL + 1) * (w - KERNEL + 1) * c


def init_hallucinator(key: jax.Array, image_shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """One hallucinator's parameters (PyTorch default init; affine 1, 0).

    Returns ``{'enc_w' [3,3,C,C], 'enc_b' [C], 'scale' [H-2,W-2,C], 'shift' [H-2,W-2,C],
    'dec_w' [3,3,C,C], 'dec_b' [C]}`` (float32).
    """
    h, w, c = image_shape
    bound = 1.0 / math.sqrt(KERNEL * KERNEL * c)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    uniform = lambda k, shape: jax.random.uniform(k, shape, jnp.float32, -bound, bound)
    inner = (h - KERNEL + 1, w - KERNEL + 1, c)
    return {"enc_w": uniform(k1, (KERNEL, KERNEL, c, c)), "enc_b": uniform(k2, (c,)),
            "scale": jnp.ones(inner, jnp.float32), "shift": jnp.zeros(inner, jnp.float32),
            "dec_w": uniform(k3, (KERNEL, KERNEL, c, c)), "dec_b": uniform(k4, (c,))}


def hallucinate(p: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    """One hallucinator on bases ``x [B, H, W, C]`` -> images ``[B, H, W, C]``."""
    y = jax.lax.conv_general_dilated(x, p["enc_w"], (1, 1), "VALID", dimension_numbers=_DIMS)
    y = (y + p["enc_b"]) * p["scale"] + p["shift"]
    full = KERNEL - 1
    y = jax.lax.conv_general_dilated(y, p["dec_w"], (1, 1), ((full, full), (full, full)),
                                     dimension_numbers=_DIMS)
    return y + p["dec_b"]


def hallucinate_each(stacked: Mapping[str, jax.Array], which: jax.Array, x: jax.Array) -> jax.Array:
    """Sample ``n`` of ``x [B, H, W, C]`` through hallucinator ``which[n]`` (int ``[B]``)
    of the ``h`` stacked networks (leaves ``[h, ...]``). Every network runs on the
    batch and the wanted output is kept (the networks are tiny); gradients reach only
    the chosen network of each sample."""
    outs = jax.vmap(hallucinate, in_axes=(0, None))(stacked, x)  # [h, B, H, W, C]
    return outs[which, jnp.arange(x.shape[0])]


# --------------------------------------------------------------- storage budget
def storage(num_classes: int, bases_per_class: int, num_hallucinators: int,
            image_shape: tuple[int, ...]) -> int:
    """Numbers stored by bases and hallucinators (learned lr / labels not included)."""
    return (num_classes * bases_per_class * int(np.prod(image_shape))
            + num_hallucinators * hallucinator_size(image_shape))


def bases_for_budget(ipc: int, num_classes: int, num_hallucinators: int,
                     image_shape: tuple[int, ...]) -> int:
    """Bases per class at the storage of ``ipc`` pixel images per class:

        b = max(1, floor((ipc*K*D - h*hallucinator_size) / (K*D))),   D = H*W*C.

    1 when not even one base per class fits (the ref's IPC-1 setting, larger storage).
    """
    d = int(np.prod(image_shape))
    free = ipc * num_classes * d - num_hallucinators * hallucinator_size(image_shape)
    return max(1, free // (num_classes * d))


# ------------------------------------------------------------ parameterisation
@dataclasses.dataclass(frozen=True)
class Hallucinated:
    """``b`` bases per class x ``h`` hallucinators (see the module docstring).

    Attributes:
      num_classes: K.
      bases_per_class: b.
      num_hallucinators: h.
      image_shape: ``(H, W, C)`` of bases and images.
    """

    num_classes: int
    bases_per_class: int
    num_hallucinators: int
    image_shape: tuple[int, ...]

    @property
    def per_class(self) -> int:
        """Decoded images per class: every base through every hallucinator (``b*h``)."""
        return self.bases_per_class * self.num_hallucinators

    @property
    def num_bases(self) -> int:
        """``K * b``."""
        return self.num_classes * self.bases_per_class

    def base_labels(self) -> jax.Array:
        """int32 ``[K*b]`` class of every base (class-major)."""
        return jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), self.bases_per_class)

    def init(self, key: jax.Array, real: common.RealData, mode: str) -> PyTree:
        """Bases from ``b`` distinct real images per class (``real``) or N(0, 1) noise;
        hallucinators by :func:`init_hallucinator` (independent keys)."""
        k_bases, k_hal = jax.random.split(key)
        if mode == "real":
            bases = common.init_real_images(k_bases, real, self.bases_per_class)
        elif mode == "noise":
            bases = jax.random.normal(k_bases, (self.num_bases, *self.image_shape))
        else:
            raise ValueError(f"unknown init {mode!r}; valid: {common.INIT_MODES}")
        keys = jax.random.split(k_hal, self.num_hallucinators)
        hallucinators = jax.vmap(lambda k: init_hallucinator(k, self.image_shape))(keys)
        return {"bases": bases, "hallucinators": hallucinators}

    def decode(self, params: PyTree) -> jax.Array:
        """All combinations ``[K*b*h, H, W, C]``, row ``(c*b + i)*h + j`` = base ``i`` of
        class ``c`` through hallucinator ``j``."""
        outs = jax.vmap(hallucinate, in_axes=(0, None))(params["hallucinators"], params["bases"])
        return jnp.swapaxes(outs, 0, 1).reshape(-1, *self.image_shape)

    def minibatch(self, params: PyTree, base_idx: jax.Array, which: jax.Array,
                  ) -> tuple[jax.Array, jax.Array]:
        """Bases ``base_idx [B]`` through hallucinators ``which [B]``: images
        ``[B, H, W, C]`` and their int32 classes ``[B]``."""
        x = hallucinate_each(params["hallucinators"], which, params["bases"][base_idx])
        return x, self.base_labels()[base_idx]

    def optimizer(self, bases: optax.GradientTransformation,
                  hallucinators: optax.GradientTransformation) -> optax.GradientTransformation:
        """One optimiser for the bases, another for every hallucinator leaf (also inside
        a larger params tree, e.g. ``SyntheticSpec.optimizer``'s)."""
        def label(path, _):
            return "bases" if any(getattr(k, "key", None) == "bases" for k in path) else "hallucinators"

        return optax.multi_transform({"bases": bases, "hallucinators": hallucinators},
                                     lambda p: jax.tree_util.tree_map_with_path(label, p))


# --------------------------------------------------------------------- artifacts
def factors(params: PyTree) -> dict[str, jax.Array]:
    """Flat ``{'bases': ..., 'hallucinators.<leaf>': ...}`` view of the image params
    (what ``synthetic.npz`` stores as ``factor.<name>``; traceable)."""
    return {"bases": params["bases"],
            **{f"hallucinators.{k}": v for k, v in params["hallucinators"].items()}}


def decode_factors(stored: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
    """The decoded set ``[K*b*h, H, W, C]`` (:meth:`Hallucinated.decode`) from stored
    :func:`factors`, without the run's config.

    Raises:
      ValueError: the factors are not bases and hallucinators, or the bases do not
        split into ``num_classes`` classes.
    """
    prefix = "hallucinators."
    if "bases" not in stored or not any(k.startswith(prefix) for k in stored):
        raise ValueError(f"not hallucinator factors: {sorted(stored)}")
    bases = jnp.asarray(stored["bases"])
    if bases.shape[0] % num_classes:
        raise ValueError(f"{bases.shape[0]} bases do not split into {num_classes} classes")
    hal = {k[len(prefix):]: jnp.asarray(v) for k, v in stored.items() if k.startswith(prefix)}
    par = Hallucinated(num_classes, bases.shape[0] // num_classes, int(hal["scale"].shape[0]),
                       tuple(bases.shape[1:]))
    return np.asarray(par.decode({"bases": bases, "hallucinators": hal}))


__all__ = ["Hallucinated", "bases_for_budget", "decode_factors", "factors", "hallucinate",
           "hallucinate_each", "hallucinator_size", "init_hallucinator", "storage"]
