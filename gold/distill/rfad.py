"""RFAD: Efficient Dataset Distillation using Random Feature Approximation (Loo, Hasani,
Amini & Rus, NeurIPS 2022).

Reference yolky/RFAD ``distillation.py`` / ``run_distillation.py`` / ``models.py``.
One ``step`` = one reference iteration:

1. ``num_models`` (8) freshly drawn wide ConvNets, no norm, ReLU, average pooling,
   width ``width_multiplier`` (2) x ``config.model.width`` (ref ``ConvNet_wide`` k=2,
   net_width 128), Gaussian weights ``N(0, w_var / fan_in)`` (w_var 2) and biases
   ``N(0, b_var)`` (b_var 0.01: ref ``Conv2d_gaussian``), head chopped: their
   flattened last-block features (``model.embed``) are random features of the
   ConvNet's NNGP. Redrawn every step (ref schedule ``(0, n_models, 1)``:
   ``model_rot`` = 1);
2. features ``phi(x) = concat_m embed_m(x) / sqrt(num_models * F)`` and the NNGP of a
   ReLU readout, ``K(x, x') = readout_w_var * phi(x) . phi(x') + readout_b_var``
   (ref ``2 * X @ X.T + 0.01``), averaged over the models by the concatenation;
3. a class-balanced real batch of ``batch_real`` per class (ref: 4 x 1280 uniformly
   drawn images, ~512 per class on 10 classes), features without gradient;
4. KRR of the real batch on the support (``gold.distill.krr``; ref ``jit`` 5e-3:
   ``lambda = 5e-3 * trace(K_ss) / S``); support labels ``one_hot - 1/K`` (centred;
   learned with ``learn_labels``), targets centred one-hot;
5. loss: Platt (``CE(exp(log_temperature) * pred, class)``, ``log_temperature``
   learned from 0 with lr 1e-2: ref ``k``) or MSE (``0.5 * mean((y - pred)^2)``);
6. one AdaBelief step (lr 1e-3, eps 1e-16: ref ``torch_optimizer.AdaBelief``) on the
   images, the learned labels (same lr) and the temperature.

Not reproduced: the ref's learned linear transform of the images (identity init, lr
5e-5; it stays near the identity) and its validation-based early stopping (it keeps
the best of evaluations every 40 iterations, patience 1000). The ref keeps MNIST at
28 pixels (3x3 final maps); gold's ConvNet pads 28 -> 32 (4x4 maps), as for every
other algorithm.

``params`` holds the spec's entries (images, labels) and, with a learned Platt
temperature, ``log_temperature`` (float32 scalar) with its own optimiser; the stored
synthetic set is ``spec.decode(params)``.
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
from gold.distill import registry
from gold.distill.settings import check_choice, check_positive, setting

LOSSES: tuple[str, ...] = ("platt", "mse")
OPTIMIZERS: tuple[str, ...] = ("adabelief", "adam")
FEATURE_NORMS: tuple[str, ...] = ("none", "instancenorm", "layernorm", "groupnorm")


@dataclasses.dataclass(frozen=True)
class RFADSettings(common.BaseSettings):
    """RFAD hyper-parameters (ref yolky/RFAD: ``run_distillation.py`` defaults and
    ``distillation.distill_dataset``; ``models.ConvNet_wide``)."""

    iterations: int = setting(5000, "RFAD iterations (ref: up to 100,000 with early stopping)")
    init: str = setting("real", "initial support images: real (ref init_strategy 'random') | noise")
    optimizer: str = setting("adabelief", "optimiser of every entry: adabelief (ref, eps 1e-16) | adam")
    lr_img: float = setting(1e-3, "learning rate of the support images (ref --lr 1e-3)")
    learn_labels: bool = setting(False, "learn the support labels (ref --learn_labels)")
    lr_labels: float = setting(1e-3, "learning rate of the learned labels (ref: same group as the images)")
    center_labels: bool = setting(True, "centred one-hot labels one_hot - 1/K (ref)")
    loss: str = setting("platt", "platt (ref --platt: CE of exp(t) * pred) | mse (0.5 * mean sq. error)")
    learn_temperature: bool = setting(True, "learn the Platt log-temperature (ref k, init 0)")
    log_temperature: float = setting(0.0, "initial (or fixed) Platt log-temperature")
    lr_temperature: float = setting(1e-2, "learning rate of the Platt log-temperature (ref 1e-2)")
    num_models: int = setting(8, "random ConvNets whose features are concatenated (ref --n_models 8)")
    width_multiplier: int = setting(2, "feature networks are this x model.width wide (ref ConvNet_wide k=2)")
    feature_norm: str = setting("none", "norm of the feature networks (ref net_norm 'none')")
    w_var: float = setting(2.0, "conv weight variance x fan_in (ref N(0, 2/fan_in))")
    b_var: float = setting(0.01, "conv bias variance (ref N(0, 0.1^2))")
    readout_w_var: float = setting(2.0, "NNGP readout: K = readout_w_var * phi.phi' + readout_b_var (ref 2)")
    readout_b_var: float = setting(0.01, "NNGP readout bias variance (ref 0.01)")
    reg: float = setting(5e-3, "KRR regulariser: lambda = reg * trace(K_ss) / S (ref --jit 5e-3)")
    jitter: float = setting(krr.DEFAULT_JITTER, "extra relative ridge when the Cholesky factor fails")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("feature_norm", self.feature_norm, FEATURE_NORMS)
        check_positive(lr_img=self.lr_img, num_models=self.num_models,
                       width_multiplier=self.width_multiplier, w_var=self.w_var)
        if self.learn_labels and not self.lr_labels > 0:
            raise ValueError("learn_labels=True needs lr_labels > 0")
        if self.loss == "platt" and self.learn_temperature and not self.lr_temperature > 0:
            raise ValueError("learn_temperature=True needs lr_temperature > 0")
        if min(self.reg, self.jitter, self.b_var, self.readout_w_var, self.readout_b_var) < 0:
            raise ValueError("reg, jitter, b_var, readout_w_var and readout_b_var must be >= 0")

    @property
    def learns_temperature(self) -> bool:
        """The Platt log-temperature is a learned entry of ``params``."""
        return self.loss == "platt" and self.learn_temperature


def feature_model(config: Any, s: RFADSettings, num_classes: int, shape: tuple[int, ...]):
    """The wide ConvNet of the random features (``config.model`` family, depth and
    pooling; width x ``width_multiplier``; ``feature_norm``).

    Raises:
      ValueError: a model outside the ConvNet family (RFAD's features are ConvNet's).
    """
    if not str(config.model.name).startswith("convnet"):
        raise ValueError(f"RFAD's random features come from a ConvNet; model.name={config.model.name!r} "
                         f"is not of the ConvNet family")
    mcfg = ml_collections.ConfigDict(config.model.to_dict())
    mcfg.width = int(mcfg.get("width", 128) or 128) * s.width_multiplier
    mcfg.norm = s.feature_norm
    return config_utils.build_model(mcfg, num_classes, shape)


def random_features(model, key: jax.Array, x: jax.Array, shape: tuple[int, ...],
                    w_var: float, b_var: float) -> jax.Array:
    """``[N, F]`` flattened last-block features of a freshly drawn Gaussian network."""
    k_init, k_draw = jax.random.split(key)
    variables = gnn.init_variables(model, k_init, shape)
    params = kip.gaussian_params(variables["params"], k_draw, w_var, b_var)
    out = model.apply({**variables, "params": params}, x, train=False, method=model.embed)
    return out.reshape(out.shape[0], -1)


def ensemble_features(model, keys: jax.Array, x: jax.Array, shape: tuple[int, ...],
                      w_var: float, b_var: float) -> jax.Array:
    """``[M, N, F] / sqrt(M * F)``: the features of ``M = len(keys)`` networks
    (``lax.map`` over networks), scaled so that their concatenated inner product is
    the average over networks of ``phi . phi' / F``."""
    feats = jax.lax.map(lambda k: random_features(model, k, x, shape, w_var, b_var), keys)
    return feats / math.sqrt(feats.shape[0] * feats.shape[-1])


def nngp_kernel(f1: jax.Array, f2: jax.Array, w_var: float = 2.0, b_var: float = 0.01) -> jax.Array:
    """``w_var * sum_m f1[m] f2[m]^T + b_var``, ``[n1, n2]`` from ``[M, n, F]`` features."""
    return w_var * jnp.einsum("maf,mbf->ab", f1, f2) + b_var


def _optimizer(kind: str, lr: float) -> optax.GradientTransformation:
    return optax.adabelief(lr, eps=1e-16, eps_root=1e-16) if kind == "adabelief" else optax.adam(lr)


@registry.register("rfad", RFADSettings)
def make(s: RFADSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """RFAD on ``real`` (``configs/rfad.py``).

    Raises:
      ValueError: bad settings, a model outside the ConvNet family.
    """
    k = real.num_classes
    shape = real.image_shape
    krr.check_support_size(real, s.ipc)
    kip.check_label_evaluation(config, s.learn_labels, s.center_labels)
    model = feature_model(config, s, k, shape)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k, learn_labels=s.learn_labels)
    transforms = {"images": _optimizer(s.optimizer, s.lr_img)}
    if s.learn_labels:
        transforms["labels"] = _optimizer(s.optimizer, s.lr_labels)
    if s.learns_temperature:
        transforms["log_temperature"] = _optimizer(s.optimizer, s.lr_temperature)
    tx = optax.multi_transform(transforms, lambda params: {name: name for name in params})

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        params = kip.init_labels(spec.init(key, real_, s.init), spec, s.center_labels)
        if s.learns_temperature:
            params["log_temperature"] = jnp.float32(s.log_temperature)
        return common.DistillState.start(params, tx)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_real = jax.random.split(key)
        keys = jax.random.split(k_net, s.num_models)
        x_t, y_t, w_t = kip.real_targets(real_, k_real, real_.batch)
        f_t = jax.lax.stop_gradient(ensemble_features(model, keys, x_t, shape, s.w_var, s.b_var))
        targets = krr.one_hot_targets(y_t, k, s.center_labels, spec.label_scale)

        def loss_fn(params):
            f_s = ensemble_features(model, keys, spec.images_of(params), shape, s.w_var, s.b_var)
            k_ss = nngp_kernel(f_s, f_s, s.readout_w_var, s.readout_b_var)
            k_ts = nngp_kernel(f_t, f_s, s.readout_w_var, s.readout_b_var)
            y_s = kip.support_targets(params, spec, s.center_labels)
            pred, info = krr.krr_predict(k_ts, k_ss, y_s, s.reg, s.jitter, return_info=True)
            if s.loss == "platt":
                log_t = params["log_temperature"] if s.learns_temperature else s.log_temperature
                loss = krr.platt_loss(pred, y_t, log_t, w_t)
            else:
                loss = krr.mse_loss(pred, targets, w_t)
            return loss, (krr.accuracy(pred, y_t, w_t), info)

        (loss, (acc, info)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)
        metrics = {"loss": loss, "krr_accuracy": acc, "krr_fallback": info.fallback}
        if s.learns_temperature:
            metrics["log_temperature"] = params["log_temperature"]
        return state.replace(params=params, opt_state=opt_state), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "batch_real": real.batch, "algorithm": "rfad",
                "feature_width": int(model.width), "kernel": "random-feature NNGP (ReLU readout)"}
    return common.Algorithm("rfad", init, step, synthetic, settings)


__all__ = ["FEATURE_NORMS", "LOSSES", "OPTIMIZERS", "RFADSettings", "ensemble_features", "feature_model",
           "make", "nngp_kernel", "random_features"]
