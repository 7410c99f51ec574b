"""DC (gradient matching) and DSA (DC + Differentiable Siamese Augmentation).

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR 2021) and
Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation" (ICML
2021); reference VICO-UoE/DatasetCondensation ``main.py``. One :func:`make` serves
both: ``algorithm='dsa'`` is DC with ``dsa=True``.

One ``step`` = one reference iteration:

1. a freshly initialised network (new random init every iteration);
2. ``outer_loop`` times (a ``lax.scan``):

   a. BatchNorm nets only: run a real batch of ``bn_batch_per_class`` images of every
      class through the net in training mode (updates the running statistics once,
      momentum 0.1) and then use the running statistics (PyTorch ``module.eval()``)
      for the matching forward passes ("freeze mu and sigma");
   b. for every class c (``lax.map``): a real batch of the class (``real.batch``,
      the halving rule) and the class's synthetic images, the same DSA transform on
      both (DSA only; one parameter draw per class), the gradient of the mean
      cross-entropy w.r.t. the network parameters on each, and their distance
      (``matching.gradient_distance``, ``dis_metric``);
   c. one SGD step (lr ``lr_img``, momentum ``momentum_img``) on the images with the
      gradient of the SUM of the per-class distances;
   d. except after the last outer loop: ``inner_loop`` epochs of SGD (``lr_net``,
      ``momentum_net``, batch ``batch_train``) on the synthetic set (with per-sample
      DSA for DSA, as the reference's ``epoch(..., aug=args.dsa)``).

Runtime pruning (paper Sec. 5.1, Code 1; supp. 12.6) is a switch of the same step:
once the outer loop index reaches ``start`` (a fraction of ``outer_loop``, or of
``iterations`` with ``start_unit='iteration'``), the real gradient of each class uses
only ``1 - ratio`` of its batch, drawn without replacement with probability
``softmax(-loss / tau)``. The per-sample losses come from the one forward pass the
real gradient needs anyway (``jax.vjp``), so pruning costs no extra forward.

The network's per-sample real losses are also the loss indicator the paper reuses,
and ``metrics['loss']`` is the reference's ``loss_avg`` (matching loss averaged over
classes and outer loops).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gold import augment as gaug
from gold import nn as gnn
from gold import selection as gsel
from gold.distill import common
from gold.distill import matching

# Reference get_loops(ipc): (outer_loop, inner_loop).
DEFAULT_LOOPS: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15), (50, 50, 10))

START_UNITS: tuple[str, ...] = ("outer_loop", "iteration")


def loops_for_ipc(ipc: int, table=DEFAULT_LOOPS) -> tuple[int, int]:
    """(outer_loop, inner_loop) of the reference ``get_loops`` for ``ipc``.

    Raises:
      ValueError: ``ipc`` not in the table (set ``outer_loop`` / ``inner_loop``).
    """
    for row in table:
        if int(row[0]) == int(ipc):
            return int(row[1]), int(row[2])
    raise ValueError(f"no (outer_loop, inner_loop) defined for ipc={ipc} (known: "
                     f"{[int(r[0]) for r in table]}); set config.outer_loop and config.inner_loop")


@dataclasses.dataclass(frozen=True)
class DCSettings:
    """Resolved, static hyper-parameters of a DC / DSA run (see ``configs/dc.py``)."""

    ipc: int
    iterations: int
    outer_loop: int
    inner_loop: int
    lr_img: float
    momentum_img: float
    lr_net: float
    momentum_net: float
    batch_train: int
    batch_real: int
    init: str
    dis_metric: str
    dsa: bool
    dsa_strategy: str
    bn_batch_per_class: int
    class_loop: str
    prune: bool
    prune_keep: float
    prune_tau: float
    prune_start_outer: int
    prune_start_iteration: int


def settings_from_config(config: Any, real: common.RealData, *, dsa: bool) -> DCSettings:
    """Validate ``config`` and resolve defaults (loops by IPC, pruning start)."""
    ipc = common.config_ipc(config)
    outer, inner = int(config.get("outer_loop", 0) or 0), int(config.get("inner_loop", 0) or 0)
    if outer <= 0 or inner <= 0:
        o, i = loops_for_ipc(ipc, tuple(tuple(r) for r in config.get("loops_by_ipc", DEFAULT_LOOPS)))
        outer, inner = outer if outer > 0 else o, inner if inner > 0 else i
    if config.dis_metric not in matching.METRICS:
        raise ValueError(f"unknown dis_metric {config.dis_metric!r}; valid: {matching.METRICS}")
    if config.init not in common.INIT_MODES:
        raise ValueError(f"unknown init {config.init!r}; valid: {common.INIT_MODES}")
    class_loop = config.get("class_loop", "map")
    if class_loop not in common.CLASS_LOOPS:
        raise ValueError(f"unknown class_loop {class_loop!r}; valid: {common.CLASS_LOOPS}")
    rp = config.runtime_pruning
    prune = bool(rp.get("enabled", False))
    ratio = float(rp.ratio)
    if prune and not 0.0 <= ratio < 1.0:
        raise ValueError(f"runtime_pruning.ratio is the PRUNED fraction of each real batch and "
                         f"must be in [0, 1), got {ratio}")
    if prune and float(rp.tau) <= 0:
        raise ValueError(f"runtime_pruning.tau must be > 0, got {rp.tau}")
    start = float(rp.get("start", 0.4))
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"runtime_pruning.start is a fraction in [0, 1], got {start}")
    unit = rp.get("start_unit", "outer_loop")
    if unit not in START_UNITS:
        raise ValueError(f"unknown runtime_pruning.start_unit {unit!r}; valid: {START_UNITS}")
    iterations = int(config.iterations)
    start_outer = math.ceil(start * outer) if unit == "outer_loop" else 0
    start_it = math.ceil(start * iterations) if unit == "iteration" else 0
    return DCSettings(
        ipc=ipc, iterations=iterations, outer_loop=outer, inner_loop=inner,
        lr_img=float(config.lr_img), momentum_img=float(config.momentum_img),
        lr_net=float(config.lr_net), momentum_net=float(config.get("momentum_net", 0.0)),
        batch_train=int(config.batch_train), batch_real=real.batch, init=str(config.init),
        dis_metric=str(config.dis_metric), dsa=bool(dsa),
        dsa_strategy=str(config.get("dsa_strategy", gaug.DEFAULT_STRATEGY)),
        bn_batch_per_class=int(config.get("bn_batch_per_class", 16)), class_loop=class_loop,
        prune=prune, prune_keep=1.0 - ratio, prune_tau=float(rp.tau),
        prune_start_outer=int(start_outer), prune_start_iteration=int(start_it))


def masked_prune_weights(key: jax.Array, losses: jax.Array, mask: jax.Array, keep_ratio: float,
                         tau: float) -> jax.Array:
    """Runtime-pruning weights ``[B]`` restricted to the valid entries of a batch.

    ``gold.selection.runtime_prune_weights`` draws ``round(keep_ratio * B)`` entries
    without replacement with ``p = softmax(-loss / tau)``; padding entries (mask 0,
    repeats filling a class smaller than the batch) get a huge loss, hence probability
    0, and any weight that still lands on them is removed before renormalising to a
    mean over the kept valid entries.
    """
    big = jnp.float32(1e30)
    w = gsel.runtime_prune_weights(key, jnp.where(mask > 0, losses, big), keep_ratio, tau)
    w = w * mask
    return w / jnp.maximum(jnp.sum(w), 1e-12)


def real_gradient(per_sample_loss, params, mask: jax.Array,
                  prune: Optional[tuple] = None) -> tuple[Any, jax.Array]:
    """Gradient of the (kept) mean real loss from ONE forward pass.

    ``losses, vjp = jax.vjp(per_sample_loss, params)``; the gradient is
    ``vjp(weights)`` with ``weights = mask / sum(mask)`` (the plain mean over the valid
    entries) or, when pruning is on, the runtime-pruning weights computed from the
    same (stopped) losses: no second forward pass (paper Code 1).

    Args:
      per_sample_loss: ``params -> [B]`` losses of the real batch.
      params: network parameters.
      mask: float ``[B]``, 1 for valid entries, 0 for padding.
      prune: None, or ``(key, keep_ratio, tau, on)`` with ``on`` a (traced) bool.

    Returns:
      (gradient pytree with stopped gradients, per-sample losses ``[B]``).
    """
    losses, vjp = jax.vjp(per_sample_loss, params)
    losses = jax.lax.stop_gradient(losses)
    weights = mask / jnp.maximum(jnp.sum(mask), 1.0)
    if prune is not None:
        key, keep, tau, on = prune
        weights = jnp.where(on, masked_prune_weights(key, losses, mask, keep, tau), weights)
    return jax.lax.stop_gradient(vjp(weights.astype(losses.dtype))[0]), losses


def make(config: Any, real: common.RealData) -> common.Algorithm:
    """Build DC (``config.algorithm == 'dc'``) or DSA (``'dsa'``, or ``config.dsa``)."""
    name = str(config.get("algorithm", "dc"))
    dsa = name == "dsa" or bool(config.get("dsa", False))
    s = settings_from_config(config, real, dsa=dsa)
    k = real.num_classes
    shape = real.image_shape
    model = common.build_model(config.model, k, shape)
    pixels = common.Pixels(k, s.ipc, shape)
    tx_img = common.image_optimizer(s.lr_img, s.momentum_img)
    tx_net = gnn.sgd(s.lr_net, s.momentum_net, 0.0)
    probe = jax.eval_shape(lambda: gnn.init_variables(model, jax.random.key(0), shape))
    has_bn = "batch_stats" in probe
    hw = shape[:2]

    def siamese_params(key):
        return gaug.sample_dsa_params(key, 1, hw, s.dsa_strategy)

    def train_augment(key, x):
        return gaug.dsa(key, x, s.dsa_strategy, siamese=False)

    def forward(variables, params, x):
        # Matching passes: BN nets use their (frozen) running statistics.
        return model.apply({**variables, "params": params}, x, train=False)

    def class_loss(variables, real_, prune_on, c, x_c, key):
        """Matching distance of class c; differentiated w.r.t. ``x_c`` by the caller."""
        k_real, k_aug, k_prune = jax.random.split(key, 3)
        xr, mask = common.real_class_batch(real_, k_real, c)
        if s.dsa:
            aug = siamese_params(k_aug)
            xr, x_c = gaug.apply_dsa(xr, aug), gaug.apply_dsa(x_c, aug)
        params = variables["params"]
        yr = jnp.full((xr.shape[0],), c, jnp.int32)
        per_sample = lambda p: gnn.per_sample_cross_entropy(forward(variables, p, xr), yr)
        prune = (k_prune, s.prune_keep, s.prune_tau, prune_on) if s.prune else None
        g_real, _ = real_gradient(per_sample, params, mask, prune)
        ys = jnp.full((x_c.shape[0],), c, jnp.int32)
        g_syn = jax.grad(
            lambda p: jnp.mean(gnn.per_sample_cross_entropy(forward(variables, p, x_c), ys)))(params)
        return matching.gradient_distance(g_real, g_syn, s.dis_metric)

    def freeze_bn(variables, real_, key):
        """One training-mode pass of a real batch of every class updates the running
        statistics, which the matching passes then use (reference BN freezing)."""
        xb, _ = common.real_all_classes(real_, key, s.bn_batch_per_class)
        _, new = gnn.apply_model(model, variables, xb, train=True)
        return new

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        params = pixels.init(key, real_, s.init)
        return common.DistillState.start(params, tx_img)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_loop = jax.random.split(key)
        variables = gnn.init_variables(model, k_net, shape)
        net_state = gnn.TrainState(variables, tx_net.init(variables["params"]))
        y_syn = pixels.labels()
        it_on = state.iteration >= s.prune_start_iteration

        def outer_body(carry, ol):
            params, opt_state, net_state = carry
            k_bn, k_match, k_train = jax.random.split(jax.random.fold_in(k_loop, ol), 3)
            variables = net_state.variables
            if has_bn:
                variables = freeze_bn(variables, real_, k_bn)
            prune_on = jnp.logical_and(it_on, ol >= s.prune_start_outer)
            x_syn, decode_vjp = jax.vjp(pixels.decode, params)
            x_by_class = x_syn.reshape(k, pixels.per_class, *shape)
            fn = lambda c, x_c, kk: class_loss(variables, real_, prune_on, c, x_c, kk)
            losses, gx = common.per_class_value_and_grad(fn, x_by_class, k_match, s.class_loop)
            (grads,) = decode_vjp(gx.reshape(x_syn.shape))
            params, opt_state = common.apply_image_update(tx_img, params, opt_state, grads)
            net_state = net_state._replace(variables=variables)

            def train(ns):
                x_new = pixels.decode(params)
                return common.train_network(
                    model, tx_net, ns, x_new, y_syn, k_train, epochs=s.inner_loop,
                    batch_size=s.batch_train, augment=train_augment if s.dsa else None)

            if s.outer_loop > 1:  # (static) the last outer loop never trains the net
                net_state = jax.lax.cond(ol < s.outer_loop - 1, train, lambda ns: ns, net_state)
            return (params, opt_state, net_state), jnp.sum(losses)

        (params, opt_state, _), loss_sum = jax.lax.scan(
            outer_body, (state.params, state.opt_state, net_state),
            jnp.arange(s.outer_loop, dtype=jnp.int32))
        new_state = state.replace(params=params, opt_state=opt_state, iteration=state.iteration + 1)
        # Reference loss_avg: sum over classes and outer loops / (K * outer_loop).
        return new_state, {"loss": jnp.sum(loss_sum) / (k * s.outer_loop)}

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return common.Synthetic(pixels.decode(state.params), pixels.labels(), None)

    settings = {**dataclasses.asdict(s), "has_batchnorm": has_bn, "algorithm": "dsa" if dsa else "dc"}
    return common.Algorithm("dsa" if dsa else "dc", init, step, synthetic, settings)


__all__ = ["DCSettings", "DEFAULT_LOOPS", "START_UNITS", "loops_for_ipc", "make",
           "masked_prune_weights", "real_gradient", "settings_from_config"]
