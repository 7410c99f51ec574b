"""KIP: Kernel Inducing Points (Nguyen, Chen & Lee, "Dataset Meta-Learning from Kernel
Ridge-Regression", ICLR 2021), the finite-network variant with label learning
("KIP-NN", as the critical-samples paper ran it, its supp. remark 7).

One ``step`` = one KIP iteration:

1. a freshly initialised ConvNet (``config.model``; its parameters redrawn Gaussian
   with weight variance ``w_var / fan_in`` and bias variance ``b_var``: the paper's
   sigma_w^2 = 2, sigma_b^2 = 1e-4; ``weight_init='model'`` keeps the model's own
   init), never trained;
2. a class-balanced real (target) batch of ``batch_real`` images per class (paper:
   "we always sample target batches in a class-balanced way");
3. the empirical NTK of that network, traced over the logits,
   ``K(x1, x2) = sum_k <d f_k(x1)/d theta, d f_k(x2)/d theta>``, from per-sample
   Jacobians (``vmap`` over images of ``jacrev``: ``K`` vjps per image) of the support
   ``J_s [S, K, P]`` and of the real batch ``J_t [T, K, P]``, contracted by matmul:
   ``K_ss = J_s J_s^T``, ``K_ts = J_t J_s^T``; ``kernel_chunk`` bounds how many real
   images' Jacobians exist at once (``lax.map``, recomputed in the backward pass).
   The real batch costs ``T*K`` vjps, where pushing the ``S*K`` support rows through
   the linearised network (``jvp``) costs ``S*K`` forward passes of ``T`` images, and
   only reverse mode is needed, so on CPU the network keeps the shifted convolution of
   ``gold.models.conv`` (batched matmuls; ``vmap`` of XLA's convolution derivatives
   lowers to grouped convolutions): MNIST IPC 1, width 32, 10 real images per class,
   ~3.5 s per step (load 8 on 2 cores) against 116 s (load 4) for the ``jvp`` route
   at 5 per class
   (``bench/notes/kernel.md``);
4. KRR predictions of the real batch from the support set (``gold.distill.krr``,
   ``lambda = reg * trace(K_ss) / S``, reg 1e-6) and the MSE loss
   ``0.5 * mean((pred - y)^2)`` on mean-centred one-hot labels (paper: "all our labels
   are mean-centered 1-hot labels");
5. one Adam step on the support images and (``learn_labels``) the support labels,
   lr 0.01 (MNIST) / 0.04 (CIFAR-10) (paper; the colab uses 4e-2 for both).

The kernel network is ``config.model`` as it is (``conv_impl='auto'``: the shifted
convolution on CPU, XLA's elsewhere).

Learned labels are stored (``synthetic.npz``) as learned: centred one-hot at the start
(``[M, K]`` floats, negative entries included); they are evaluated with the MSE
protocol (``eval.loss='mse'``), and a cross-entropy evaluation of them is refused when
the algorithm is built (:func:`check_label_evaluation`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from gold import config_utils
from gold import nn as gnn
from gold.distill import common
from gold.distill import krr
from gold.distill import registry
from gold.distill.settings import check_choice, check_positive, setting

PyTree = Any
WEIGHT_INITS: tuple[str, ...] = ("gaussian", "model")


# ----------------------------------------------------------------- random networks
def gaussian_params(params: PyTree, key: jax.Array, w_var: float = 2.0, b_var: float = 1e-4) -> PyTree:
    """``params`` with every layer redrawn Gaussian (standard parameterisation).

    Each ``kernel`` leaf (conv ``[kh, kw, C, O]`` or dense ``[F, O]``) becomes
    ``N(0, w_var / fan_in)`` with ``fan_in = prod(shape[:-1])``; the ``bias`` beside a
    kernel becomes ``N(0, b_var)``. Other leaves (norm scales and offsets) are kept.
    This is the initialisation of neural-tangents' ``W_std^2 = w_var``,
    ``b_std^2 = b_var`` networks (KIP: 2 and 1e-4; RFAD's ConvNet: 2 and 0.01).
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    layers = sorted({path[:-1] for path in flat if path[-1] == "kernel"})
    out = dict(flat)
    for i, layer in enumerate(layers):
        kw, kb = jax.random.split(jax.random.fold_in(key, i))
        w = flat[layer + ("kernel",)]
        fan_in = math.prod(w.shape[:-1])
        out[layer + ("kernel",)] = math.sqrt(w_var / fan_in) * jax.random.normal(kw, w.shape, w.dtype)
        if layer + ("bias",) in flat:
            b = flat[layer + ("bias",)]
            out[layer + ("bias",)] = math.sqrt(b_var) * jax.random.normal(kb, b.shape, b.dtype)
    return flax.traverse_util.unflatten_dict(out)


# ------------------------------------------------------------------ empirical NTK
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]  # (params, x [B, ...]) -> outputs [B, K]


def per_sample_jacobian(apply_fn: ApplyFn, params: PyTree, x: jax.Array) -> PyTree:
    """Per-sample Jacobians of the outputs w.r.t. ``params``: leaves ``[N, K, *leaf]``
    for ``x [N, ...]`` (``vmap`` over samples of ``jacrev``, i.e. one ``vjp`` per output).

    Reverse mode only, so the network may use the shifted CPU convolution of
    ``gold.models.conv``: its per-sample weight gradients are batched matmuls, where
    ``jax.vmap`` of XLA's convolution gradients lowers to grouped convolutions.
    """
    def one(xi):
        return jax.jacrev(lambda p: apply_fn(p, xi[None])[0])(params)

    return jax.vmap(one)(x)


def ntk_from_jacobians(j1: PyTree, j2: PyTree) -> jax.Array:
    """``[n1, n2]``: ``sum_k <J1[a, k], J2[b, k]>`` over every parameter leaf
    (leaves ``[n1, K, *leaf]`` and ``[n2, K, *leaf]``)."""
    def leaf(a, b):
        return jnp.einsum("akp,bkp->ab", a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1))

    return sum(jax.tree.leaves(jax.tree.map(leaf, j1, j2)))


def ntk_with_jacobian(apply_fn: ApplyFn, params: PyTree, x: jax.Array, jac: PyTree,
                      chunk: int = 0) -> jax.Array:
    """``[T, S]`` empirical NTK between inputs ``x [T, ...]`` and the samples whose
    Jacobian is ``jac`` (leaves ``[S, K, ...]``).

    The Jacobian of ``x`` is formed per sample (:func:`per_sample_jacobian`) and
    contracted with ``jac`` by matmul. ``chunk > 0``: that many rows of ``x`` at a time
    (``lax.map`` of a ``jax.checkpoint``-ed row), so at most ``chunk * K * P`` Jacobian
    entries of ``x`` are alive, forward or backward (the backward pass recomputes them);
    ``chunk = 0``: all ``T * K * P`` at once (kept for the backward pass).
    """
    def rows(xc):  # [c, ...] -> [c, S]
        return ntk_from_jacobians(per_sample_jacobian(apply_fn, params, xc), jac)

    t = x.shape[0]
    if chunk and chunk < t:
        row = jax.checkpoint(lambda xi: rows(xi[None])[0])
        return jax.lax.map(row, x, batch_size=int(chunk))
    return rows(x)


def empirical_ntk(apply_fn: ApplyFn, params: PyTree, x1: jax.Array, x2: jax.Array,
                  chunk: int = 0) -> jax.Array:
    """The empirical NTK ``J(x1) J(x2)^T`` traced over the outputs, ``[n1, n2]``
    (``x1``'s Jacobian ``chunk`` rows at a time, see :func:`ntk_with_jacobian`)."""
    return ntk_with_jacobian(apply_fn, params, x1, per_sample_jacobian(apply_fn, params, x2), chunk)


def support_and_target_ntk(apply_fn: ApplyFn, params: PyTree, x_support: jax.Array,
                           x_target: jax.Array, chunk: int = 0) -> tuple[jax.Array, jax.Array]:
    """``(K_ss [S, S], K_ts [T, S])`` sharing one support Jacobian."""
    jac = per_sample_jacobian(apply_fn, params, x_support)
    return ntk_from_jacobians(jac, jac), ntk_with_jacobian(apply_fn, params, x_target, jac, chunk)


# ------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class KIPSettings(common.BaseSettings):
    """KIP-NN hyper-parameters (KIP paper, ICLR 2021, sec. "Experiment details": Adam,
    mean-centred one-hot labels, lr 0.01 MNIST / 0.04 CIFAR-10, class-balanced target
    batches, sigma_w^2 = 2, sigma_b^2 = 1e-4; reg 1e-6 from the colab's ``loss_fn``)."""

    iterations: int = setting(1000, "KIP iterations (0 = evaluate the initial set)")
    init: str = setting("real", "initial support images: real (random kept images) | noise")
    lr_img: float = setting(0.04, "Adam learning rate of the support images (paper: 0.04 CIFAR-10, 0.01 MNIST)")
    learn_labels: bool = setting(True, "learn the support labels (the paper's KIP-NN does; centred "
                                       "labels need the MSE evaluation, eval.loss='mse')")
    lr_labels: float = setting(0.04, "Adam learning rate of the learned labels (paper: same as the images)")
    center_labels: bool = setting(True, "mean-centred one-hot labels (one_hot - 1/K), support and targets")
    reg: float = setting(krr.DEFAULT_REG, "KRR regulariser: lambda = reg * trace(K_ss) / S (colab 1e-6)")
    jitter: float = setting(krr.DEFAULT_JITTER, "extra relative ridge when the Cholesky factor fails")
    weight_init: str = setting("gaussian", "kernel network init: gaussian (w_var/fan_in, b_var) | model")
    w_var: float = setting(2.0, "weight variance sigma_w^2 of the gaussian init (paper 2)")
    b_var: float = setting(1e-4, "bias variance sigma_b^2 of the gaussian init (paper 1e-4)")
    kernel_chunk: int = setting(0, "real images whose Jacobians are formed at once (0 = the whole real "
                                   "batch; > 0 bounds memory, recomputing them in the backward pass)")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        check_choice("weight_init", self.weight_init, WEIGHT_INITS)
        check_positive(lr_img=self.lr_img, w_var=self.w_var)
        if self.learn_labels and not self.lr_labels > 0:
            raise ValueError("learn_labels=True needs lr_labels > 0")
        if self.reg < 0 or self.jitter < 0 or self.b_var < 0 or self.kernel_chunk < 0:
            raise ValueError(f"reg, jitter, b_var and kernel_chunk must be >= 0, got "
                             f"{self.reg}, {self.jitter}, {self.b_var}, {self.kernel_chunk}")


# ----------------------------------------------------------------- shared helpers
def init_labels(params: PyTree, spec: common.SyntheticSpec, center: bool) -> PyTree:
    """Learned labels start at ``label_scale * one_hot`` (the spec), minus
    ``label_scale / K`` when ``center``: what the KRR sees is what is stored."""
    if spec.learn_labels and center:
        params = {**params, "labels": params["labels"] - spec.label_scale / spec.num_classes}
    return params


def support_targets(params: PyTree, spec: common.SyntheticSpec, center: bool) -> jax.Array:
    """float32 ``[M, K]`` support labels of the KRR: the learned ones, or the (centred)
    one-hot of the hard labels."""
    if spec.learn_labels:
        return params["labels"]
    return krr.one_hot_targets(spec.hard_labels(), spec.num_classes, center, spec.label_scale)


def real_targets(real: common.RealData, key: jax.Array, per_class: int):
    """A class-balanced real batch: images ``[K*n, ...]``, int labels, weights."""
    x, w = common.real_all_classes(real, key, per_class)
    y = jnp.repeat(jnp.arange(real.num_classes, dtype=jnp.int32), per_class)
    return x, y, w


def check_label_evaluation(config: Any, learn_labels: bool, center: bool) -> None:
    """ValueError, before any distillation, when learned centred labels (negative
    entries) would be evaluated with a cross-entropy protocol: such labels need the
    MSE evaluation (``config.eval.loss='mse'``, e.g. the ``frepo`` preset)."""
    loss = str(config.get("eval", {}).get("loss", "ce"))
    if learn_labels and center and loss != "mse":
        raise ValueError(
            f"learn_labels=True learns centred soft labels (negative entries), but config.eval.loss="
            f"{loss!r} trains the evaluation networks with cross-entropy on them; evaluate with "
            f"--config.eval.loss=mse (the configs' label-learning evaluation) or set learn_labels=False")


@registry.register("kip", KIPSettings)
def make(s: KIPSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """KIP-NN on ``real`` (``configs/kip.py``)."""
    k = real.num_classes
    shape = real.image_shape
    krr.check_support_size(real, s.ipc)
    check_label_evaluation(config, s.learn_labels, s.center_labels)
    model = config_utils.build_model(config.model, k, shape)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k, learn_labels=s.learn_labels)
    tx = spec.optimizer(images=optax.adam(s.lr_img),
                        labels=optax.adam(s.lr_labels) if s.learn_labels else None)

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        params = init_labels(spec.init(key, real_, s.init), spec, s.center_labels)
        return common.DistillState.start(params, tx)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_w, k_real = jax.random.split(key, 3)
        variables = gnn.init_variables(model, k_net, shape)
        net = variables["params"]
        if s.weight_init == "gaussian":
            net = gaussian_params(net, k_w, s.w_var, s.b_var)
        rest = {c: v for c, v in variables.items() if c != "params"}

        def apply_fn(p, x):
            return model.apply({**rest, "params": p}, x, train=False)

        x_t, y_t, w_t = real_targets(real_, k_real, real_.batch)
        targets = krr.one_hot_targets(y_t, k, s.center_labels, spec.label_scale)

        def loss_fn(params):
            x_s = spec.images_of(params)
            k_ss, k_ts = support_and_target_ntk(apply_fn, net, x_s, x_t, s.kernel_chunk)
            pred, info = krr.krr_predict(k_ts, k_ss, support_targets(params, spec, s.center_labels),
                                         s.reg, s.jitter, return_info=True)
            return krr.mse_loss(pred, targets, w_t), (krr.accuracy(pred, y_t, w_t), info)

        (loss, (acc, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)
        metrics = {"loss": loss, "krr_accuracy": acc, "krr_fallback": info.fallback}
        return state.replace(params=params, opt_state=opt_state), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "batch_real": real.batch, "algorithm": "kip",
                "kernel": "empirical NTK (traced over logits)"}
    return common.Algorithm("kip", init, step, synthetic, settings)


__all__ = ["KIPSettings", "WEIGHT_INITS", "check_label_evaluation", "empirical_ntk", "gaussian_params",
           "init_labels", "make", "ntk_from_jacobians", "ntk_with_jacobian", "real_targets",
           "per_sample_jacobian", "support_and_target_ntk",
           "support_targets"]
