"""FRePo: Dataset Distillation using Neural Feature Regression (Zhou, Nezhadarya & Ba,
NeurIPS 2022). Reference yongchao97/FRePo ``lib/datadistillation/frepo.py`` and
``script/distill.py``.

One ``step`` = one reference iteration:

1. sample one slot of a pool of ``num_models`` (10) online ConvNets (``config.model``
   family, depth and width; norm ``feature_norm``, ref README ``--normalization=batch``);
2. its penultimate features ``phi`` (``model.embed``: the flattened last block, the
   ref's ``feat_fc``) of the support set and of a class-balanced real batch
   (``batch_real`` per class; ref: 1024 uniformly drawn; real features carry no
   gradient); kernel ``K = phi phi^T``;
3. KRR of the real batch on the support (``gold.distill.krr``, ``lambda = reg *
   trace(K_ss) / S``, reg 1e-6) with the support labels (centred one-hot divided by
   ``sqrt(K / 10)``, learned with ``learn_labels``); with ``flip_support`` (ref for
   non-MNIST data) the support is doubled by its horizontal flips (same labels);
4. loss ``0.5 * sum_k (pred - y)^2`` averaged over the real batch (the ref's
   ``mean_squared_loss``: ``num_classes`` x :func:`gold.distill.krr.mse_loss`) on
   centred one-hot targets, plus ``label_margin_weight`` x the ref's ``lb_margin_th``
   (``-min(top1 - top2, 1/K)`` of each learned label, mean);
5. one LAMB (or Adam) step on the images and learned labels, lr ``lr_img`` with
   cosine decay to ``lr_alpha`` x lr over ``iterations`` (ref
   ``cosine_decay_schedule(alpha=0.1)``);
6. the sampled slot is trained one Adam step (lr ``lr_net``, 3e-4) on up to
   ``batch_syn`` (500) images of the updated synthetic set with their current labels,
   MSE loss (ref ``train_step`` with ``mean_squared_loss``); a slot that has made
   ``max_online_updates`` (100) updates is re-initialised (the ref checks ``step >
   max_online_updates`` before training, one update later: immaterial).
   Initial ages are staggered, ``(max_online_updates // num_models) * i`` (ref).

The pool (variables, optimiser states, ages, stacked along a leading slot axis) lives in
``DistillState.extra['pool']`` so a checkpoint resumes exactly.

Not reproduced: the ref's periodic KRR / network evaluations inside the loop and its
best-checkpoint selection (gold evaluates with ``config.eval`` on the schedule of the
run loop).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gold import config_utils
from gold import nn as gnn
from gold.distill import common
from gold.distill import kip
from gold.distill import krr
from gold.distill import netpool
from gold.distill import registry
from gold.distill.settings import check_choice, check_positive, setting

PyTree = Any
OPTIMIZERS: tuple[str, ...] = ("lamb", "adam")
FEATURE_NORMS: tuple[str, ...] = ("batchnorm", "none", "instancenorm", "layernorm", "groupnorm")


@dataclasses.dataclass(frozen=True)
class FRePoSettings(common.BaseSettings):
    """FRePo hyper-parameters (ref ``script/distill.py`` defaults and README commands;
    critical-samples paper supp. remark 8: ref defaults, lr 0.001, 500,000 steps)."""

    iterations: int = setting(500000, "FRePo iterations (critical-samples paper: 500,000)")
    init: str = setting("real", "initial support images: real (ref init_proto) | noise")
    optimizer: str = setting("lamb", "optimiser of the support set: lamb (ref) | adam")
    lr_img: float = setting(1e-3, "lr of images and learned labels (paper 1e-3; ref default 3e-4)")
    lr_alpha: float = setting(0.1, "cosine decay over `iterations` to lr_alpha x lr (ref alpha 0.1)")
    learn_labels: bool = setting(True, "learn the support labels (ref --learn_label=True)")
    label_margin_weight: float = setting(1.0, "weight of the ref's lb_margin_th label loss (0 = off)")
    reg: float = setting(krr.DEFAULT_REG, "KRR regulariser: lambda = reg * trace(K_ss) / S (ref 1e-6)")
    jitter: float = setting(krr.DEFAULT_JITTER, "extra relative ridge when the Cholesky factor fails")
    flip_support: bool = setting(False, "double the support by horizontal flips (ref: non-MNIST data)")
    num_models: int = setting(10, "online models in the pool (ref --num_nn_state 10)")
    max_online_updates: int = setting(100, "a slot is re-initialised after this many updates (ref 100)")
    lr_net: float = setting(3e-4, "Adam lr of the online models (ref online.learning_rate)")
    batch_syn: int = setting(500, "synthetic images per online update (ref min(500, M))")
    feature_norm: str = setting("batchnorm", "norm of the online models (ref README --normalization=batch)")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("feature_norm", self.feature_norm, FEATURE_NORMS)
        check_positive(lr_img=self.lr_img, lr_net=self.lr_net, num_models=self.num_models,
                       max_online_updates=self.max_online_updates, batch_syn=self.batch_syn)
        if not 0.0 <= self.lr_alpha <= 1.0:
            raise ValueError(f"lr_alpha must be in [0, 1], got {self.lr_alpha}")
        if min(self.reg, self.jitter, self.label_margin_weight) < 0:
            raise ValueError("reg, jitter and label_margin_weight must be >= 0")
        if self.label_margin_weight > 0 and not self.learn_labels:
            raise ValueError("label_margin_weight > 0 acts on learned labels: set learn_labels=True "
                             "or label_margin_weight=0")


# ------------------------------------------------------------------------- pieces
def label_margin_loss(labels: jax.Array) -> jax.Array:
    """Mean over rows of ``-min(top1 - top2, 1/K)`` of ``labels [M, K]`` (ref
    ``lb_margin_th``: rewards a margin between the two largest entries up to 1/K)."""
    top2 = jax.lax.top_k(labels, 2)[0]
    return -jnp.mean(jnp.minimum(top2[:, 0] - top2[:, 1], 1.0 / labels.shape[-1]))


def feature_regression(f_t: jax.Array, f_s: jax.Array, y_s: jax.Array, reg: float,
                       jitter: float) -> tuple[jax.Array, krr.KRRInfo]:
    """KRR with the linear kernel of features: ``[T, K]`` predictions of the targets
    from ``f_t [T, F]``, support ``f_s [S, F]`` and labels ``y_s [S, K]``."""
    return krr.krr_predict(f_t @ f_s.T, f_s @ f_s.T, y_s, reg, jitter, return_info=True)


def with_flips(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x [S, H, W, C]`` and its horizontal flips, labels repeated: ``[2S, ...]``."""
    return jnp.concatenate([x, jnp.flip(x, axis=-2)]), jnp.concatenate([y, y])


def scaled_mse(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """The ref's ``mean_squared_loss``: ``0.5 * sum_k (pred - target)^2``, mean over rows."""
    return pred.shape[-1] * krr.mse_loss(pred, target, weights)


def init_pool(pool: netpool.NetPoolSpec, key: jax.Array, max_updates: int) -> netpool.NetPool:
    """Every slot filled, ages staggered ``(max_updates // M) * i`` (ref) so the
    resets are spread over time."""
    slots = pool.init(key, filled=pool.size)
    return slots.replace(age=(max_updates // pool.size) * jnp.arange(pool.size, dtype=jnp.int32))


def reset_old(pool: netpool.NetPoolSpec, slots: netpool.NetPool, key: jax.Array,
              max_updates: int) -> netpool.NetPool:
    """Re-initialise the slots that made ``max_updates`` updates (skipped under a
    ``cond`` when none did: most steps)."""
    due = jnp.any(slots.valid & (slots.age >= max_updates))
    return jax.lax.cond(due, lambda p: pool.reset_older_than(p, key, max_updates), lambda p: p, slots)


def feature_model(config: Any, s: FRePoSettings, num_classes: int, shape: tuple[int, ...]):
    """``config.model`` (the ConvNet family: the ref's ``Conv``) with norm ``feature_norm``.

    Raises:
      ValueError: a model outside the ConvNet family.
    """
    if not str(config.model.name).startswith("convnet"):
        raise ValueError(f"FRePo's online models are ConvNets (norm = feature_norm); model.name="
                         f"{config.model.name!r} is not of the ConvNet family")
    mcfg = ml_collections.ConfigDict(config.model.to_dict())
    mcfg.norm = s.feature_norm
    return config_utils.build_model(mcfg, num_classes, shape)


@registry.register("frepo", FRePoSettings)
def make(s: FRePoSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """FRePo on ``real`` (``configs/frepo.py``).

    Raises:
      ValueError: bad settings, a support set larger than the kept data, a model
        outside the ConvNet family.
    """
    k = real.num_classes
    shape = real.image_shape
    krr.check_support_size(real, s.ipc)
    kip.check_label_evaluation(config, s.learn_labels, True)
    model = feature_model(config, s, k, shape)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k, learn_labels=s.learn_labels,
                                label_scale=1.0 / math.sqrt(k / 10.0))
    schedule = optax.cosine_decay_schedule(s.lr_img, max(s.iterations, 1), alpha=s.lr_alpha)
    make_tx = optax.lamb if s.optimizer == "lamb" else optax.adam
    tx = spec.optimizer(images=make_tx(schedule), labels=make_tx(schedule) if s.learn_labels else None)
    pool = netpool.NetPoolSpec(model, optax.adam(s.lr_net), shape, s.num_models,
                               loss=gnn.per_sample_squared_error)
    m = k * s.ipc
    batch_syn = min(s.batch_syn, m)

    def features(variables: PyTree, x: jax.Array) -> jax.Array:
        return model.apply(variables, x, train=False, method=model.embed)

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        k_syn, k_pool = jax.random.split(key)
        params = kip.init_labels(spec.init(k_syn, real_, s.init), spec, True)
        return common.DistillState.start(params, tx, {"pool": init_pool(pool, k_pool, s.max_online_updates)})

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_slot, k_real, k_train, k_reset = jax.random.split(key, 4)
        slots = state.extra["pool"]
        slot = pool.sample(slots, k_slot)
        variables = slots.slot(slot[0])
        x_t, y_t, w_t = kip.real_targets(real_, k_real, real_.batch)
        f_t = jax.lax.stop_gradient(features(variables, x_t))
        targets = krr.one_hot_targets(y_t, k, center=True)

        def loss_fn(params):
            x_s, y_s = spec.images_of(params), kip.support_targets(params, spec, True)
            if s.flip_support:
                x_s, y_s = with_flips(x_s, y_s)
            pred, info = feature_regression(f_t, features(variables, x_s), y_s, s.reg, s.jitter)
            kernel_loss = scaled_mse(pred, targets, w_t)
            margin = label_margin_loss(y_s) if s.label_margin_weight > 0 else jnp.float32(0.0)
            loss = kernel_loss + s.label_margin_weight * margin
            return loss, (kernel_loss, krr.accuracy(pred, y_t, w_t), info)

        (loss, (kernel_loss, acc, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)

        # the sampled slot: one update on the updated synthetic set (ref order), then the
        # slot that has made max_online_updates updates is re-initialised
        x_all = spec.images_of(params)
        y_all = kip.support_targets(params, spec, True)

        def batch_fn(kb):
            idx = jax.random.choice(kb, m, (batch_syn,), replace=False)
            return x_all[idx], y_all[idx]

        slots = pool.train(slots, slot, k_train, batch_fn, 1)
        slots = reset_old(pool, slots, k_reset, s.max_online_updates)
        metrics = {"loss": loss, "kernel_loss": kernel_loss, "krr_accuracy": acc,
                   "krr_fallback": info.fallback, "model_age": slots.age[slot[0]].astype(jnp.float32)}
        return state.replace(params=params, opt_state=opt_state, extra={"pool": slots}), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "batch_real": real.batch, "algorithm": "frepo",
                "label_scale": spec.label_scale, "batch_syn_used": batch_syn,
                "kernel": "linear kernel of the online model's penultimate features"}
    return common.Algorithm("frepo", init, step, synthetic, settings)


__all__ = ["FEATURE_NORMS", "FRePoSettings", "OPTIMIZERS", "feature_model", "feature_regression",
           "label_margin_loss", "make", "scaled_mse", "with_flips"]
