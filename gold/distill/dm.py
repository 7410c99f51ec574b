"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Reference VICO-UoE/DatasetCondensation ``main_DM.py``. One ``step`` = one reference
iteration:

1. a freshly initialised network, never trained (its parameters are constants);
2. for every class c (``lax.map``): a real batch of the class (``real.batch``, the
   halving rule) and the class's synthetic images, the same DSA transform on both
   (one Siamese parameter draw per class; ``dsa_strategy='none'`` turns it off), the
   penultimate features (``model.embed``) of each, and
   ``||mean(real emb) - mean(syn emb)||^2`` (``matching.mean_embedding_distance``);
3. one SGD step (lr ``lr_img`` 1.0, momentum 0.5) on the images with the gradient of
   the SUM over classes.

BatchNorm networks (the reference's ConvNetBN branch): all classes go through the
network in one training-mode batch (batch statistics over real, resp. synthetic,
images of every class), then the same per-class distance.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from gold import augment as gaug
from gold import config_utils
from gold import nn as gnn
from gold.distill import common
from gold.distill import matching
from gold.distill import registry


@dataclasses.dataclass(frozen=True)
class DMSettings(common.ClassMatchingSettings):
    """DM hyper-parameters (paper supp. 12.3; reference ``main_DM.py``): 20,000
    iterations, real init, SGD on the images with lr 1.0 and momentum 0.5, Siamese DSA."""

    iterations: int = 20000
    init: str = "real"
    lr_img: float = 1.0


@registry.register("dm", DMSettings)
def make(s: DMSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """DM on ``real`` (``configs/dm.py``)."""
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k)
    tx = spec.optimizer(common.sgd(s.lr_img, s.momentum_img))
    has_bn = common.has_batchnorm(model, shape)
    use_dsa = bool(gaug.parse_strategy(s.dsa_strategy))
    hw = shape[:2]

    def embed(variables, x):
        if has_bn:
            out, _ = model.apply(variables, x, train=True, method=model.embed, mutable=["batch_stats"])
            return out
        return model.apply(variables, x, train=True, method=model.embed)

    def augment_pair(key, xr, xs):
        if not use_dsa:
            return xr, xs
        p = gaug.sample_dsa_params(key, 1, hw, s.dsa_strategy)
        return gaug.apply_dsa(xr, p), gaug.apply_dsa(xs, p)

    def class_loss(variables, real_, c, x_c, key):
        k_real, k_aug = jax.random.split(key)
        xr, mask = common.real_class_batch(real_, k_real, c)
        xr, x_c = augment_pair(k_aug, xr, x_c)
        er = jax.lax.stop_gradient(embed(variables, xr))
        return matching.mean_embedding_distance(er, embed(variables, x_c), mask)

    def joint_loss(variables, real_, x_by_class, key):
        """BatchNorm branch: every class in one forward (batch statistics)."""
        keys = jax.random.split(key, k)
        xr, masks, xs = [], [], []
        for c in range(k):
            k_real, k_aug = jax.random.split(keys[c])
            xr_c, m_c = common.real_class_batch(real_, k_real, c)
            xr_c, xs_c = augment_pair(k_aug, xr_c, x_by_class[c])
            xr.append(xr_c), masks.append(m_c), xs.append(xs_c)
        er = jax.lax.stop_gradient(embed(variables, jnp.concatenate(xr)))
        es = embed(variables, jnp.concatenate(xs))
        return matching.mean_embedding_distance(
            er.reshape(k, real_.batch, -1), es.reshape(k, spec.per_class, -1), jnp.stack(masks))

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        return common.DistillState.start(spec.init(key, real_, s.init), tx)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_match = jax.random.split(key)
        variables = gnn.init_variables(model, k_net, shape)

        def image_grad(x_syn):
            x_by_class = x_syn.reshape(k, spec.per_class, *shape)
            if has_bn:
                loss, gx = jax.value_and_grad(lambda xb: joint_loss(variables, real_, xb, k_match))(x_by_class)
            else:
                fn = lambda c, x_c, kk: class_loss(variables, real_, c, x_c, kk)
                losses, gx = common.per_class_value_and_grad(fn, x_by_class, k_match, s.class_loop)
                loss = jnp.sum(losses)
            return gx.reshape(x_syn.shape), loss

        new_state, loss = common.image_gradient_step(tx, spec, state, image_grad)
        # Reference loss_avg: summed distance / K.
        return new_state, {"loss": loss / k}

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "batch_real": real.batch, "has_batchnorm": has_bn,
                "algorithm": "dm"}
    return common.Algorithm("dm", init, step, synthetic, settings)


__all__ = ["DMSettings", "make"]
