"""IDC: Dataset Condensation via Efficient Synthetic-Data Parameterization.

Kim et al., ICML 2022; reference snu-mllab/Efficient-Dataset-Condensation
(``condense.py`` with ``--reproduce``, ``misc/reproduce.py``, ``argument.py``).

Parameterisation: :class:`gold.distill.formation.MultiFormation` (``factor`` f: each
stored image is an f x f grid of crops, each crop bilinearly upsampled to full size,
label repeated f^2), init by tiling f^2 downscaled real images per stored image.

Pixel units (the choice this port makes): the stored pixels are learned in [0, 1]
(the reference's ``synset.data``) and clipped to [0, 1] at the start of every step
(the reference clamps once per outer iteration); decoding normalises them with the
dataset's channel mean / std (the reference normalises inside the augmentation; the
resize is linear, so the two orders agree). The decoded images, which the matching,
the evaluation and ``synthetic.npz`` see, are therefore in the normalised units of
``RealData`` and of the test set. ZCA-whitened data have no pixel range: refused.

One ``step`` = one reference outer iteration ``it``:

1. clip the stored pixels to [0, 1]; a freshly initialised network (ConvNet; SGD lr
   ``lr_net`` 0.01, momentum 0.9, weight decay 5e-4);
2. ``inner_loop`` times (a ``lax.scan``; the reference's ``--inner_loop`` 100):

   a. for every class c in turn (a ``lax.scan``: the reference takes one SGD step on
      the images after EACH class, so the momentum of every pixel moves K times per
      inner iteration): a real batch of the class (``real.batch``: ``batch_real`` 64
      through the halving rule), the class's ``ipc * f^2`` decoded images (a random
      ``batch_syn_max`` = 128 of them when there are more), one Siamese DSA draw on
      both (``dsa_strategy``: the reference's ``color_crop_cutout``), the gradient
      of the mean cross-entropy w.r.t. the network on each, the distance summed over
      the conv kernels only (``matching.gradient_distance`` with a 4-D leaf filter;
      ``mse`` for CIFAR / SVHN, ``l1`` for MNIST: sum reduction), and one SGD step
      (lr :attr:`IDCSettings.image_lr`, momentum ``momentum_img``) on the stored pixels;
   b. except after the last inner iteration (the network is discarded then): the
      network trains on ``ceil(n_data / batch_train)`` minibatches of ``batch_train``
      real images (reference ``train_epoch(..., n_data=500)``), each with per-sample
      DSA (``dsa_strategy`` without ``cutout`` when CutMix is on) and CutMix with
      probability ``cutmix_prob`` (``gold.augment.cutmix``).

Runtime pruning (paper Sec. 5.1, supp. 12.6) is DC's switch (``runtime_pruning.*``,
:class:`gold.distill.dc.RuntimePruning`, through ``dc.real_gradient``): once the inner
iteration index reaches ``ceil(start * inner_loop)`` (``start_unit='outer_loop'``
counts the image updates of one network, as DC's outer loop does; or
``ceil(start * iterations)`` with ``start_unit='iteration'``), each class's real
gradient uses ``1 - ratio`` of the valid entries of its batch, drawn by
``softmax(-loss / tau)`` from the losses of the same forward pass.

``metrics['loss']`` is the reference's log: the matching loss summed over classes and
inner iterations / (K * inner_loop).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from gold import augment as gaug
from gold import config_utils
from gold import data as gdata
from gold import nn as gnn
from gold.distill import common
from gold.distill import dc
from gold.distill import matching
from gold.distill import registry
from gold.distill.formation import MultiFormation
from gold.distill.settings import check_choice, check_positive, group, setting


def conv_kernels_only(path: tuple, leaf: jax.Array) -> bool:
    """Leaf filter of the IDC distance: conv kernels (4-D) only; the reference skips
    biases / norm scales (1-D, ``--bias False``) and the classifier (2-D, ``--fc False``)."""
    del path
    return leaf.ndim == 4


def matching_loss(logits_fn: Callable[[Any, jax.Array], jax.Array], params: Any, x_real: jax.Array,
                  mask: jax.Array, x_syn: jax.Array, c: jax.Array | int, metric: str,
                  prune: Optional[tuple] = None) -> jax.Array:
    """IDC's per-class matching distance: scalar float32.

    ``metric`` distance (sum reduction) over the conv kernels between the gradient of
    the mean cross-entropy of the real batch ``x_real [B, ...]`` (mean over its valid
    entries, ``mask [B]``; with ``prune = (key, keep_ratio, tau, on)`` over the kept
    entries only, ``dc.real_gradient``) and that of the synthetic images ``x_syn [M, ...]``,
    all of class ``c``, w.r.t. ``params``; ``logits_fn(params, x) -> [N, K]``.
    Differentiable w.r.t. ``x_syn``; the real gradient is a constant.
    """
    yr = jnp.full((x_real.shape[0],), c, jnp.int32)
    ys = jnp.full((x_syn.shape[0],), c, jnp.int32)
    per_sample = lambda p: gnn.per_sample_cross_entropy(logits_fn(p, x_real), yr)
    g_real, _ = dc.real_gradient(per_sample, params, mask, prune)
    g_syn = jax.grad(lambda p: jnp.mean(gnn.per_sample_cross_entropy(logits_fn(p, x_syn), ys)))(params)
    return matching.gradient_distance(g_real, g_syn, metric, leaf_filter=conv_kernels_only)


@dataclasses.dataclass(frozen=True)
class IDCSettings(common.PixelSGDSettings, common.NetworkTrainingSettings):
    """IDC hyper-parameters (reference ``--reproduce``; paper supp. 12.3 uses factor 2)."""

    iterations: int = 2000
    init: str = "real"
    lr_img: float = setting(5e-3, "image lr at IPC 10 (reference --lr_img); the step uses "
                                  "lr_img * ipc / 10 (reference tune_lr_img)")
    dsa_strategy: str = "color_crop_cutout"
    lr_net: float = 0.01
    momentum_net: float = setting(0.9, "SGD momentum of the network (IDC reference: 0.9)")
    batch_train: int = setting(64, "minibatch of REAL images when training the network")
    weight_decay_net: float = setting(5e-4, "weight decay of the network's SGD")
    factor: int = setting(2, "multi-formation factor f: f x f decoded images per stored image")
    inner_loop: int = setting(100, "image updates (each over every class) per network = per step")
    dis_metric: str = setting("mse", "gradient distance on conv kernels: mse | l1 | cos | ours")
    batch_syn_max: int = setting(128, "most decoded synthetic images of a class per matching")
    n_data: int = setting(500, "real images the network trains on after each inner iteration "
                               "(0 = never trained)")
    cutmix_prob: float = setting(0.5, "CutMix probability when training the network (0 = off)")
    cutmix_beta: float = setting(1.0, "CutMix Beta(beta, beta) box-size parameter")
    runtime_pruning: dc.RuntimePruning = group(dc.RuntimePruning, "runtime pruning of real batches")

    def validate(self) -> None:
        """ValueError on a bad value or a setting that cannot take effect."""
        super().validate()
        check_choice("dis_metric", self.dis_metric, matching.METRICS)
        check_positive(lr_img=self.lr_img, lr_net=self.lr_net, batch_train=self.batch_train,
                       factor=self.factor, inner_loop=self.inner_loop,
                       batch_syn_max=self.batch_syn_max)
        if self.n_data < 0:
            raise ValueError(f"n_data must be >= 0, got {self.n_data}")
        if self.n_data > 0 and self.inner_loop == 1:
            raise ValueError("with inner_loop=1 the network is never trained (it is discarded after "
                             "the only image update); set n_data=0 or inner_loop > 1")
        if not 0.0 <= self.cutmix_prob <= 1.0:
            raise ValueError(f"cutmix_prob must be in [0, 1], got {self.cutmix_prob}")
        if self.cutmix_prob > 0 and self.cutmix_beta <= 0:
            raise ValueError(f"cutmix_beta must be > 0 when cutmix_prob > 0, got {self.cutmix_beta}")
        if self.cutmix_prob > 0 and self.n_data == 0:
            raise ValueError("cutmix_prob > 0 but the network is never trained (n_data=0)")
        rp = self.runtime_pruning
        if rp.enabled and rp.start_unit == "outer_loop" and self.prune_start_inner >= self.inner_loop:
            raise ValueError(f"runtime pruning would never start: it starts at inner iteration "
                             f"{self.prune_start_inner} (runtime_pruning.start={rp.start}) of "
                             f"{self.inner_loop}; lower runtime_pruning.start or raise inner_loop")
        if rp.enabled and rp.start_unit == "iteration" and self.prune_start_iteration >= max(self.iterations, 1):
            raise ValueError(f"runtime pruning would never start: start iteration "
                             f"{self.prune_start_iteration} >= iterations {self.iterations}")

    def real_images_per_class(self) -> int:
        """Real init tiles ``ipc * factor^2`` distinct images per class."""
        return self.ipc * self.factor ** 2

    @property
    def image_lr(self) -> float:
        """The SGD lr of the stored pixels: ``lr_img * ipc / 10`` (reference tune_lr_img)."""
        return self.lr_img * self.ipc / 10.0

    @property
    def prune_start_inner(self) -> int:
        """First inner iteration (0-based) that prunes (``start_unit='outer_loop'``)."""
        rp = self.runtime_pruning
        return math.ceil(rp.start * self.inner_loop) if rp.start_unit == "outer_loop" else 0

    @property
    def prune_start_iteration(self) -> int:
        """First iteration that prunes (``start_unit='iteration'``)."""
        rp = self.runtime_pruning
        return math.ceil(rp.start * self.iterations) if rp.start_unit == "iteration" else 0

    @property
    def net_strategy(self) -> str:
        """Per-sample DSA of the network's real batches: ``dsa_strategy`` without
        ``cutout`` when CutMix is on (reference ``remove_aug``); 'none' when empty."""
        groups = gaug.parse_strategy(self.dsa_strategy)
        if self.cutmix_prob > 0:
            groups = tuple(g for g in groups if g != "cutout")
        return "_".join(groups) or "none"


def formation_for(s: IDCSettings, config: Any, real: common.RealData) -> MultiFormation:
    """The [0, 1]-pixel multi-formation of ``config.data`` (its channel mean / std).

    Raises:
      ValueError: ZCA-whitened data (no pixel range to learn in).
    """
    if bool(config.data.get("zca", False)):
        raise ValueError("IDC learns [0, 1] pixels and normalises them; ZCA-whitened data have "
                         "no pixel range: set data.zca=False")
    info = gdata.get_info(config.data.name)
    return MultiFormation(real.num_classes, s.ipc, real.image_shape, s.factor,
                          mean=tuple(info.mean), std=tuple(info.std))


@registry.register("idc", IDCSettings)
def make(s: IDCSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """IDC on ``real`` (``configs/idc.py``)."""
    k = real.num_classes
    shape = real.image_shape
    hw = shape[:2]
    model = config_utils.build_model(config.model, k, shape)
    if common.has_batchnorm(model, shape):
        raise ValueError("IDC matches gradients of networks without BatchNorm (the reference's "
                         "instance-norm ConvNet); set model.norm to instancenorm or none")
    probe = jax.eval_shape(lambda: gnn.init_variables(model, jax.random.key(0), shape))
    if not any(leaf.ndim == 4 for leaf in jax.tree.leaves(probe["params"])):
        raise ValueError(f"IDC matches the gradients of conv kernels only, and model.name="
                         f"{config.model.name!r} has none (its distance would be 0 and the images "
                         "would never move); use a convolutional network (convnet, lenet, alexnet, "
                         "vgg11, resnet18)")
    form = formation_for(s, config, real)
    spec = common.SyntheticSpec(form, k)
    m = form.per_class
    n_syn = min(m, s.batch_syn_max)
    tx_img = spec.optimizer(common.sgd(s.image_lr, s.momentum_img))
    tx_net = gnn.sgd(s.lr_net, s.momentum_net, s.weight_decay_net)
    rp = s.runtime_pruning
    match_dsa = bool(gaug.parse_strategy(s.dsa_strategy))
    net_dsa = bool(gaug.parse_strategy(s.net_strategy))
    net_steps = -(-s.n_data // s.batch_train)
    train_net = s.n_data > 0 and s.inner_loop > 1

    def forward(variables, params, x):
        return model.apply({**variables, "params": params}, x, train=False)

    def class_loss(variables, real_, prune_on, c, stored_c, key):
        """Matching distance of class c as a function of its STORED images ``[ipc, H, W, C]``."""
        k_real, k_sub, k_aug, k_prune = jax.random.split(key, 4)
        x_c = form.decode_stored(stored_c)
        if n_syn < m:  # (static) at most batch_syn_max decoded images per matching
            x_c = x_c[jax.random.permutation(k_sub, m)[:n_syn]]
        xr, mask = common.real_class_batch(real_, k_real, c)
        if match_dsa:
            p = gaug.sample_dsa_params(k_aug, 1, hw, s.dsa_strategy)
            xr, x_c = gaug.apply_dsa(xr, p), gaug.apply_dsa(x_c, p)
        prune = (k_prune, 1.0 - rp.ratio, rp.tau, prune_on) if rp.enabled else None
        logits = lambda params, x: forward(variables, params, x)
        return matching_loss(logits, variables["params"], xr, mask, x_c, c, s.dis_metric, prune)

    def class_update(st, variables, real_, prune_on, c, key):
        """One SGD step on the stored pixels from class c's matching loss."""
        x = st.params["images"]["x"]
        by_class = x.reshape(k, s.ipc, *shape)
        loss, g_c = jax.value_and_grad(
            lambda xc: class_loss(variables, real_, prune_on, c, xc, key))(by_class[c])
        grads = {"images": {"x": jnp.zeros_like(by_class).at[c].set(g_c).reshape(x.shape)}}
        params, opt_state = common.apply_update(tx_img, st.params, st.opt_state, grads)
        return st.replace(params=params, opt_state=opt_state), loss

    def train_on_real(net: gnn.TrainState, real_: common.RealData, key) -> gnn.TrainState:
        """``net_steps`` SGD steps on uniformly drawn real minibatches (with replacement;
        the reference's shuffled loader draws without), per-sample DSA, then CutMix."""
        k_idx, k_steps = jax.random.split(key)
        idx = jax.random.randint(k_idx, (net_steps, s.batch_train), 0, real_.num_real)

        def one(net_, inputs):
            b, kk = inputs
            k_aug, k_mix = jax.random.split(kk)
            xb = real_.x[b]
            yb = jax.nn.one_hot(real_.y[b], k, dtype=xb.dtype)
            if net_dsa:
                xb = gaug.dsa(k_aug, xb, s.net_strategy, siamese=False)
            if s.cutmix_prob > 0:
                xb, yb = gaug.cutmix(k_mix, xb, yb, s.cutmix_beta, s.cutmix_prob)
            net_, _, _ = gnn.train_step(model, tx_net, net_, xb, yb)
            return net_, None

        net, _ = jax.lax.scan(one, net, (idx, jax.random.split(k_steps, net_steps)))
        return net

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        return common.DistillState.start(spec.init(key, real_, s.init), tx_img)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_loop = jax.random.split(key)
        state = state.replace(params={**state.params, "images": form.project(state.params["images"])})
        variables = gnn.init_variables(model, k_net, shape)
        net = gnn.TrainState(variables, tx_net.init(variables["params"]))
        it_on = state.iteration >= s.prune_start_iteration

        def inner_body(carry, t):
            st, net_ = carry
            k_match, k_train = jax.random.split(jax.random.fold_in(k_loop, t))
            prune_on = jnp.logical_and(it_on, t >= s.prune_start_inner)
            variables_ = net_.variables

            def class_body(st_, c):
                return class_update(st_, variables_, real_, prune_on, c, jax.random.fold_in(k_match, c))

            st, losses = jax.lax.scan(class_body, st, jnp.arange(k, dtype=jnp.int32))
            if train_net:  # (static) the network is discarded after the last inner iteration
                net_ = jax.lax.cond(t < s.inner_loop - 1,
                                    lambda n_: train_on_real(n_, real_, k_train), lambda n_: n_, net_)
            return (st, net_), jnp.sum(losses)

        (new_state, _), loss_sum = jax.lax.scan(
            inner_body, (state, net), jnp.arange(s.inner_loop, dtype=jnp.int32))
        return new_state, {"loss": jnp.sum(loss_sum) / (k * s.inner_loop)}

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode({**state.params, "images": form.project(state.params["images"])})

    settings = {**dataclasses.asdict(s), "image_lr": s.image_lr, "images_per_class": m,
                "synthetic_per_matching": n_syn, "net_strategy": s.net_strategy,
                "net_steps_per_update": net_steps if train_net else 0,
                "prune_start_inner": s.prune_start_inner,
                "prune_start_iteration": s.prune_start_iteration,
                "batch_real": real.batch, "pixel_mean": list(form.mean), "pixel_std": list(form.std),
                "algorithm": "idc"}
    return common.Algorithm("idc", init, step, synthetic, settings)


__all__ = ["IDCSettings", "conv_kernels_only", "formation_for", "make", "matching_loss"]
