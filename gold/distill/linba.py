"""LinBa: distillation into linear bases by back-propagation through training.

Deng & Russakovsky, "Remember the Past: Distilling Datasets into Addressable Memories
for Neural Networks" (NeurIPS 2022); reference
princetonvisualai/RememberThePast-DatasetDistillation (``run_scripts/
bptt_efficient_compressor_basis_minibatch.sh``, ``models/compressor_bptt_standard.py``,
``runners/sgld_runner_standard.py``, ``configs/compressors_bptt_interventions.yml``).

The synthetic set is ``gold.distill.bases.LinearBases``: 16 bases of half resolution and
a coefficient matrix with as many rows per class as the pixel budget of ``ipc`` images
per class allows (``bases.rows_for_budget``: 29 rows per class for MNIST at IPC 1).

One ``step`` = one reference iteration:

1. a freshly initialised network (``config.model``; no BatchNorm: the unroll carries
   parameters only);
2. ``unroll_steps`` (150) steps of SGD with momentum 0.9, lr 0.01 (PyTorch semantics,
   ``gold.distill.unroll.unroll``) on cross-entropy of synthetic minibatches: each step
   ``minibatch_per_class`` (32, capped at the rows) distinct decoded images of every
   class (:func:`class_minibatches`);
3. the loss: cross-entropy of the trained network on a real batch of ``batch_real``
   (64) images per class (the reference's generalisation batch);
4. its gradient w.r.t. bases and coefficients by back-propagation through all steps
   (``jax.checkpoint`` per step with ``remat``: memory ~flat in the number of steps,
   ``bench/bench_linba.py``), clipped to global norm 2, one SGD step (lr 0.1,
   momentum 0.5).

The reference's ``coeff_reg`` (l2 norm of the coefficients x 1e-4) is added inside its
backward pass to a loss that is only differentiated w.r.t. the network weights, so it
never changes the gradient of the coefficients; it is left out here. Its
``interventions`` (augmentation) default to none, as here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gold import config_utils
from gold import nn as gnn
from gold.distill import bases as gbases
from gold.distill import common
from gold.distill import registry
from gold.distill import unroll as gunroll
from gold.distill.settings import check_positive, setting


@dataclasses.dataclass(frozen=True)
class LinBaSettings(common.BaseSettings):
    """LinBa hyper-parameters (ref README command for bases: ``SGD 150 SGD 0.9 CIFAR10
    10 32 16 2``; yml: compressor SGD lr 0.1 momentum 0.5, bptt SGD lr 0.01)."""

    iterations: int = setting(5000, "distillation iterations (the reference runs its 500,000 "
                                     "until stopped by hand)")
    init: str = setting("noise", "xavier-uniform bases and coefficients (the reference's; the only choice)")
    num_bases: int = setting(16, "number of shared bases (ref n_basis)")
    downsample: int = setting(2, "bases have 1/downsample of the image side (ref downsample_scale)")
    rows_per_class: int = setting(0, "coefficient rows (decoded images) per class; 0 = the most that "
                                     "fit the pixel budget of ipc images per class (bases.rows_for_budget)")
    minibatch_per_class: int = setting(32, "rows per class in each unrolled step (ref "
                                           "compressor_minibatch_size; capped at the rows)")
    unroll_steps: int = setting(150, "SGD steps of the fresh network that are differentiated through "
                                     "(ref bptt_inner_steps)")
    lr_inner: float = setting(0.01, "SGD learning rate of the unrolled network (ref bptt_optim.lr)")
    momentum_inner: float = setting(0.9, "SGD momentum of the unrolled network (ref inner_momentum)")
    lr_img: float = setting(0.1, "SGD learning rate of bases and coefficients (ref compressor_lr)")
    momentum_img: float = setting(0.5, "SGD momentum of bases and coefficients (ref compressor_optim)")
    clip_norm: float = setting(2.0, "global-norm clip of the bases' and coefficients' gradient (ref 2)")
    remat: bool = setting(True, "jax.checkpoint each unrolled step (backward memory ~flat in unroll_steps)")

    def validate(self) -> None:
        """ValueError on a bad value (init other than noise, non-positive sizes or rates)."""
        super().validate()
        if self.init != "noise":
            raise ValueError(f"linba initialises bases and coefficients with xavier-uniform noise "
                             f"(init='noise'), got init={self.init!r}")
        check_positive(num_bases=self.num_bases, downsample=self.downsample,
                       minibatch_per_class=self.minibatch_per_class, unroll_steps=self.unroll_steps,
                       lr_inner=self.lr_inner, lr_img=self.lr_img, clip_norm=self.clip_norm)
        if self.rows_per_class < 0:
            raise ValueError(f"rows_per_class must be >= 0 (0 = from the budget), got {self.rows_per_class}")

    def rows(self, image_shape: tuple[int, ...], num_classes: int) -> int:
        """Rows per class: ``rows_per_class`` or the budget's (:func:`bases.rows_for_budget`)."""
        if self.rows_per_class:
            return self.rows_per_class
        return gbases.rows_for_budget(self.ipc, image_shape, num_classes, self.num_bases, self.downsample)


def class_minibatches(key: jax.Array, num_classes: int, rows: int, batch: int, steps: int) -> jax.Array:
    """int32 ``[steps, K * batch]`` indices into the class-major decoded set: for each
    step and class, ``batch`` distinct rows of the class drawn without replacement
    (ref ``randperm(rows)[:n_per_c]`` per class)."""
    if not 1 <= batch <= rows:
        raise ValueError(f"minibatch of {batch} rows per class needs 1 <= batch <= rows={rows}")
    keys = jax.random.split(key, steps * num_classes).reshape(steps, num_classes)
    picks = jax.vmap(jax.vmap(lambda k: jax.random.permutation(k, rows)[:batch]))(keys)
    offsets = (jnp.arange(num_classes) * rows)[None, :, None]
    return (picks + offsets).reshape(steps, num_classes * batch).astype(jnp.int32)


@registry.register("linba", LinBaSettings)
def make(s: LinBaSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """LinBa on ``real`` (``configs/linba.py``).

    Raises:
      ValueError: a model with BatchNorm, an image side not divisible by ``downsample``,
        or bases that leave no row within the budget.
    """
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    apply, num_params = gunroll.flat_apply_fn(model, shape)
    rows = s.rows(shape, k)
    images = gbases.LinearBases(k, rows, s.num_bases, shape, s.downsample)
    spec = common.SyntheticSpec(images, k)
    tx = spec.optimizer(optax.chain(optax.clip_by_global_norm(s.clip_norm),
                                    common.sgd(s.lr_img, s.momentum_img)))
    batch = min(s.minibatch_per_class, rows)
    y_real = jnp.repeat(jnp.arange(k, dtype=jnp.int32), real.batch)

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        return common.DistillState.start(spec.init(key, real_, s.init), tx)

    def outer_loss(params, theta0, idx, x_real, w_real):
        """(CE of the unrolled network on the real batch, mean CE of the unrolled steps)."""
        syn = spec.decode(params)

        def step_loss(theta, b_idx):
            return jnp.mean(gnn.per_sample_cross_entropy(apply(theta, syn.x[b_idx], True), syn.y[b_idx]))

        res = gunroll.unroll(step_loss, theta0, s.lr_inner, idx, momentum=s.momentum_inner, remat=s.remat)
        ce = gnn.per_sample_cross_entropy(apply(res.params, x_real, True), y_real)
        return jnp.sum(w_real * ce) / jnp.maximum(jnp.sum(w_real), 1.0), jnp.mean(res.losses)

    grad_fn = jax.value_and_grad(outer_loss, has_aux=True)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_idx, k_real = jax.random.split(key, 3)
        theta0, _ = gunroll.flatten_params(gnn.init_variables(model, k_net, shape)["params"])
        idx = class_minibatches(k_idx, k, rows, batch, s.unroll_steps)
        x_real, w_real = common.real_all_classes(real_, k_real, real_.batch)
        (loss, inner), grads = grad_fn(state.params, theta0, idx, x_real, w_real)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)
        metrics = {"loss": loss, "inner_ce": inner, "grad_norm": optax.tree.norm(grads)}
        return state.replace(params=params, opt_state=opt_state), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "algorithm": "linba", "images_per_class": rows,
                "minibatch_rows": batch, "batch_real": real.batch, "num_params": num_params,
                "storage_per_class": images.storage_per_class(),
                "pixel_budget_per_class": s.ipc * math.prod(shape)}
    return common.Algorithm("linba", init, step, synthetic, settings)


__all__ = ["LinBaSettings", "class_minibatches", "make"]
