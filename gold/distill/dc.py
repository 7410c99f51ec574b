"""DC (gradient matching) and DSA (DC + Differentiable Siamese Augmentation).

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR 2021) and
Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation" (ICML
2021); reference VICO-UoE/DatasetCondensation ``main.py``. One builder serves
both: ``algorithm='dsa'`` is DC with Siamese augmentation.

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
only ``1 - ratio`` of the valid entries of its batch, drawn without replacement with
probability ``softmax(-loss / tau)``. The per-sample losses come from the one forward
pass the real gradient needs anyway (``jax.vjp``), so pruning costs no extra forward.
A setting under which pruning can never start is an error. With pruning at IPC 1 the
paper runs 10 outer loops per iteration (supp. 12.6; the default single outer loop
never trains the network): :data:`PRUNING_LOOPS_BY_IPC`.

The network's per-sample real losses are also the loss indicator the paper reuses,
and ``metrics['loss']`` is the reference's ``loss_avg`` (matching loss averaged over
classes and outer loops).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gold import augment as gaug
from gold import config_utils
from gold import nn as gnn
from gold import selection as gsel
from gold.distill import common
from gold.distill import matching
from gold.distill import registry
from gold.distill.settings import check_choice, check_positive, group, setting

# Reference get_loops(ipc): (ipc, outer_loop, inner_loop).
LOOPS_BY_IPC: tuple[tuple[int, int, int], ...] = (
    (1, 1, 1), (10, 10, 50), (20, 20, 25), (30, 30, 20), (40, 40, 15), (50, 50, 10))
# With runtime pruning (paper supp. 12.6): IPC 1 runs 10 outer loops per iteration.
PRUNING_LOOPS_BY_IPC: tuple[tuple[int, int, int], ...] = ((1, 10, 1),)

START_UNITS: tuple[str, ...] = ("outer_loop", "iteration")


def loops_for_ipc(ipc: int, table=LOOPS_BY_IPC) -> tuple[int, int]:
    """(outer_loop, inner_loop) of ``table`` (rows ``(ipc, outer, inner)``) for ``ipc``.

    Raises:
      ValueError: ``ipc`` not in the table (set ``outer_loop`` / ``inner_loop``).
    """
    for row in table:
        if int(row[0]) == int(ipc):
            return int(row[1]), int(row[2])
    raise ValueError(f"no (outer_loop, inner_loop) defined for ipc={ipc} (known: "
                     f"{[int(r[0]) for r in table]}); set config.outer_loop and config.inner_loop")


@dataclasses.dataclass(frozen=True)
class RuntimePruning:
    """``runtime_pruning.*``: the paper's baseline (Sec. 5.1, Code 1; supp. 12.6)."""

    enabled: bool = setting(False, "prune every real batch by softmax(-loss/tau) sampling")
    ratio: float = setting(0.3, "PRUNED fraction of the valid entries of each real batch")
    tau: float = setting(1.0, "softmax temperature (not given in the paper)")
    start: float = setting(0.4, "fraction of outer loops (or iterations) before pruning starts")
    start_unit: str = setting("outer_loop", "what `start` counts: outer_loop | iteration")

    def validate(self) -> None:
        """ValueError on a bad value."""
        if self.enabled and not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"runtime_pruning.ratio is the PRUNED fraction of each real batch and "
                             f"must be in [0, 1), got {self.ratio}")
        if self.enabled:
            check_positive(**{"runtime_pruning.tau": self.tau})
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"runtime_pruning.start is a fraction in [0, 1], got {self.start}")
        check_choice("runtime_pruning.start_unit", self.start_unit, START_UNITS)


@dataclasses.dataclass(frozen=True)
class DCSettings(common.ClassMatchingSettings, common.NetworkTrainingSettings):
    """DC / DSA hyper-parameters (paper supp. 12.3; reference ``main.py``): 1000
    iterations, noise init, SGD on the images with lr 0.1 and momentum 0.5, the network
    trained with SGD lr 0.01 (no momentum) on minibatches of 256 synthetic images."""

    outer_loop: int = setting(0, "image updates per iteration (0 = by ipc, loops_by_ipc)")
    inner_loop: int = setting(0, "network epochs between image updates (0 = by ipc)")
    loops_by_ipc: tuple = setting(LOOPS_BY_IPC, "rows (ipc, outer_loop, inner_loop), reference get_loops")
    dis_metric: str = setting("ours", "gradient distance: ours | mse | cos | l1")
    bn_batch_per_class: int = setting(16, "real images per class that set BatchNorm statistics")
    runtime_pruning: RuntimePruning = group(RuntimePruning, "runtime pruning of real batches")

    def validate(self) -> None:
        """ValueError on a bad value, or runtime pruning that could never start."""
        super().validate()
        check_choice("dis_metric", self.dis_metric, matching.METRICS)
        check_positive(batch_train=self.batch_train)
        rp = self.runtime_pruning
        if rp.enabled and rp.start_unit == "outer_loop" and self.prune_start_outer >= self.loops[0]:
            raise ValueError(
                f"runtime pruning would never start: it starts at outer loop {self.prune_start_outer} "
                f"(runtime_pruning.start={rp.start}) but an iteration has {self.loops[0]} outer "
                f"loop(s); set outer_loop (the paper uses 10 at IPC 1) or lower runtime_pruning.start")
        if rp.enabled and rp.start_unit == "iteration" and self.prune_start_iteration >= max(self.iterations, 1):
            raise ValueError(f"runtime pruning would never start: start iteration "
                             f"{self.prune_start_iteration} >= iterations {self.iterations}")

    @functools.cached_property
    def loops(self) -> tuple[int, int]:
        """(outer_loop, inner_loop): explicit values win, zeros come from the tables
        (:data:`PRUNING_LOOPS_BY_IPC` first when runtime pruning is on)."""
        outer, inner = self.outer_loop, self.inner_loop
        if outer > 0 and inner > 0:
            return outer, inner
        tables = [tuple(self.loops_by_ipc)]
        if self.runtime_pruning.enabled:
            tables.insert(0, PRUNING_LOOPS_BY_IPC)
        for table in tables:
            if any(int(r[0]) == self.ipc for r in table):
                o, i = loops_for_ipc(self.ipc, table)
                return outer if outer > 0 else o, inner if inner > 0 else i
        return loops_for_ipc(self.ipc, tables[-1])  # raises, naming the known IPCs

    @property
    def prune_start_outer(self) -> int:
        """First outer loop (0-based) that prunes (``start_unit='outer_loop'``)."""
        rp = self.runtime_pruning
        return math.ceil(rp.start * self.loops[0]) if rp.start_unit == "outer_loop" else 0

    @property
    def prune_start_iteration(self) -> int:
        """First iteration that prunes (``start_unit='iteration'``)."""
        rp = self.runtime_pruning
        return math.ceil(rp.start * self.iterations) if rp.start_unit == "iteration" else 0


def real_gradient(per_sample_loss, params, mask: jax.Array,
                  prune: Optional[tuple] = None) -> tuple[Any, jax.Array]:
    """Gradient of the (kept) mean real loss from ONE forward pass.

    ``losses, vjp = jax.vjp(per_sample_loss, params)``; the gradient is
    ``vjp(weights)`` with ``weights = mask / sum(mask)`` (the plain mean over the valid
    entries) or, when pruning is on, the runtime-pruning weights computed from the
    same (stopped) losses over the valid entries: no second forward pass (paper Code 1).

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
        pruned = gsel.runtime_prune_weights(key, losses, keep, tau, mask=mask)
        weights = jnp.where(on, pruned, weights)
    return jax.lax.stop_gradient(vjp(weights.astype(losses.dtype))[0]), losses


def _make(s: DCSettings, config: Any, real: common.RealData, *, dsa: bool) -> common.Algorithm:
    """DC (``dsa=False``) or DSA on ``real``."""
    name = "dsa" if dsa else "dc"
    outer_loop, inner_loop = s.loops
    rp = s.runtime_pruning
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k)
    tx_img = spec.optimizer(common.sgd(s.lr_img, s.momentum_img))
    tx_net = gnn.sgd(s.lr_net, s.momentum_net, 0.0)
    has_bn = common.has_batchnorm(model, shape)
    hw = shape[:2]

    def train_augment(key, x):
        return gaug.dsa(key, x, s.dsa_strategy, siamese=False)

    def forward(variables, params, x):
        # Matching passes: BN nets use their (frozen) running statistics.
        return model.apply({**variables, "params": params}, x, train=False)

    def class_loss(variables, real_, prune_on, c, x_c, key):
        """Matching distance of class c; differentiated w.r.t. ``x_c`` by the caller."""
        k_real, k_aug, k_prune = jax.random.split(key, 3)
        xr, mask = common.real_class_batch(real_, k_real, c)
        if dsa:
            aug = gaug.sample_dsa_params(k_aug, 1, hw, s.dsa_strategy)
            xr, x_c = gaug.apply_dsa(xr, aug), gaug.apply_dsa(x_c, aug)
        params = variables["params"]
        yr = jnp.full((xr.shape[0],), c, jnp.int32)
        per_sample = lambda p: gnn.per_sample_cross_entropy(forward(variables, p, xr), yr)
        prune = (k_prune, 1.0 - rp.ratio, rp.tau, prune_on) if rp.enabled else None
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
        return common.DistillState.start(spec.init(key, real_, s.init), tx_img)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_loop = jax.random.split(key)
        variables = gnn.init_variables(model, k_net, shape)
        net_state = gnn.TrainState(variables, tx_net.init(variables["params"]))
        y_syn = spec.hard_labels()
        it_on = state.iteration >= s.prune_start_iteration

        def outer_body(carry, ol):
            st, net_state = carry
            k_bn, k_match, k_train = jax.random.split(jax.random.fold_in(k_loop, ol), 3)
            variables = net_state.variables
            if has_bn:
                variables = freeze_bn(variables, real_, k_bn)
            prune_on = jnp.logical_and(it_on, ol >= s.prune_start_outer)

            def image_grad(x_syn):
                fn = lambda c, x_c, kk: class_loss(variables, real_, prune_on, c, x_c, kk)
                x_by_class = x_syn.reshape(k, spec.per_class, *shape)
                losses, gx = common.per_class_value_and_grad(fn, x_by_class, k_match, s.class_loop)
                return gx.reshape(x_syn.shape), jnp.sum(losses)

            st, loss = common.image_gradient_step(tx_img, spec, st, image_grad)
            net_state = net_state._replace(variables=variables)

            def train(ns):
                return common.train_network(
                    model, tx_net, ns, spec.images_of(st.params), y_syn, k_train, epochs=inner_loop,
                    batch_size=s.batch_train, augment=train_augment if dsa else None)

            if outer_loop > 1:  # (static) the last outer loop never trains the net
                net_state = jax.lax.cond(ol < outer_loop - 1, train, lambda ns: ns, net_state)
            return (st, net_state), loss

        (new_state, _), loss_sum = jax.lax.scan(
            outer_body, (state, net_state), jnp.arange(outer_loop, dtype=jnp.int32))
        # Reference loss_avg: sum over classes and outer loops / (K * outer_loop).
        return new_state, {"loss": jnp.sum(loss_sum) / (k * outer_loop)}

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "outer_loop": outer_loop, "inner_loop": inner_loop,
                "prune_start_outer": s.prune_start_outer,
                "prune_start_iteration": s.prune_start_iteration,
                "batch_real": real.batch, "has_batchnorm": has_bn, "algorithm": name}
    return common.Algorithm(name, init, step, synthetic, settings)


@registry.register("dc", DCSettings)
def make_dc(s: DCSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """DC: gradient matching without augmentation."""
    return _make(s, config, real, dsa=False)


@registry.register("dsa", DCSettings)
def make_dsa(s: DCSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """DSA: DC with Siamese augmentation of the matched batches and of net training."""
    return _make(s, config, real, dsa=True)


__all__ = ["DCSettings", "LOOPS_BY_IPC", "PRUNING_LOOPS_BY_IPC", "RuntimePruning", "START_UNITS",
           "loops_for_ipc", "make_dc", "make_dsa", "real_gradient"]
