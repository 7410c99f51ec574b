"""HaBa: Dataset Distillation via Factorization (Liu et al., NeurIPS 2022), on MTT.

Reference Huage001/DatasetFactorization ``distill_fac.py``. The synthetic set is ``b``
real-initialised bases per class x ``h`` hallucinators
(:class:`gold.distill.hallucinator.Hallucinated`). One ``step`` = one reference
iteration:

1. MTT's trajectory matching (:mod:`gold.distill.mtt`: the same expert draw, student
   unroll and loss): the student's ``syn_steps`` minibatches are chunks of fresh
   permutations of the ``K*b`` bases, each passed through ONE hallucinator drawn
   uniformly for that step (ref ``random.randint(0, n_style - 1)``), then DSA;
2. the adversarial term on the next chunk: the chunk through two distinct random
   hallucinators, DSA on the ``2B`` images, the extractor's embeddings ``e0, e1``;
   ``lambda_adversarial * mean((cos(e0, e1) + 1) / 2)`` is added to the matching loss
   (the synthetic set learns to make its two views differ for the extractor; ref
   ``club_content_loss``);
3. SGD on bases (``lr_img``), hallucinators (``lr_hallucinator``), both momentum 0.95,
   and the learned lr (``lr_lr``, momentum 0.9), then the lr is clipped at
   ``min_syn_lr`` (ref 0.001);
4. the extractor (a ConvNetD3, width 128, instance norm: the ref's ``Extractor``)
   takes one SGD step (lr 0.001, momentum 0.9) on the next chunk through two distinct
   hallucinators of the UPDATED set: ``lambda_cls * CE(logits of both views, class)``
   ``+ lambda_likelihood * mean((1 - cos(e0, e1)) / 2)`` ``+ lambda_contrast *``
   :func:`supervised_contrastive` (views L2-normalised, temperature 0.07; ref
   ``SupConLoss``). Its parameters and optimiser state live in ``DistillState.extra``
   (they are not part of the stored set and not counted as storage).

``lambda_adversarial = 0`` (with the extractor weights 0) is MTT's loss alone on the
factorised data.

Evaluation and artifact: ``synthetic`` decodes EVERY (base, hallucinator) pair
(``b*h`` images per class, hard labels), which the loop evaluates and stores as ``x``
in ``synthetic.npz`` together with the factors (``factor.bases``,
``factor.hallucinators.*``). The ref instead trains its evaluation networks on the
``K*b`` bases, each through a hallucinator drawn at random every time it is loaded.
With a full-batch evaluation (``K*b*h <= batch_train``, e.g. IPC 1) each evaluation step
here sees every base through every hallucinator: the expectation of the ref's
randomly drawn batch gradient, without its sampling noise, with the same number of
steps per epoch. With more images an epoch here has ``h`` times the ref's samples.

Storage budget: ``ipc`` is the number of pixel images per class whose storage the set
may use; ``bases_per_class = 0`` picks the largest ``b`` that fits
(:func:`gold.distill.hallucinator.bases_for_budget`; at least 1, the ref's IPC-1
setting, which needs more storage than one pixel image per class). ``result.json``
reports the storage actually used (``storage_per_class``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from gold import augment as gaug
from gold import config_utils
from gold import models as gmodels
from gold import nn as gnn
from gold.distill import common
from gold.distill import hallucinator as ghal
from gold.distill import mtt
from gold.distill import registry
from gold.distill.settings import check_positive, setting
from gold.distill.unroll import flat_apply_fn


@dataclasses.dataclass(frozen=True)
class HaBaSettings(mtt.MTTSettings):
    """HaBa hyper-parameters (ref ``distill_fac.py`` and its run_cifar10_* scripts;
    the MTT fields and per-IPC table as in ``configs/mtt.py``)."""

    ipc: int = setting(1, "storage budget: numbers of ipc pixel images per class "
                          "(bases_per_class=0 fits the bases to it)")
    momentum_img: float = 0.95
    momentum_lr: float = 0.9
    num_hallucinators: int = setting(5, "hallucinator networks shared by all bases (ref --n_style)")
    bases_per_class: int = setting(0, "bases per class; 0 = the most within ipc's storage (>= 1)")
    lr_hallucinator: float = setting(100.0, "SGD learning rate of the hallucinators (ref --lr_style)")
    momentum_hallucinator: float = setting(0.95, "SGD momentum of the hallucinators")
    min_syn_lr: float = setting(0.001, "the learned lr is clipped at this after every step")
    lambda_adversarial: float = setting(0.1, "weight of the views' similarity in the synthetic "
                                             "loss (ref --lambda_club_content; 0 = MTT loss only)")
    lambda_cls: float = setting(1.0, "extractor: cross-entropy weight (ref --lambda_cls_content)")
    lambda_likelihood: float = setting(0.1, "extractor: views' dissimilarity weight "
                                            "(ref --lambda_likeli_content)")
    lambda_contrast: float = setting(0.1, "extractor: supervised contrastive weight "
                                          "(ref --lambda_contrast_content)")
    temperature: float = setting(0.07, "supervised contrastive temperature (= base temperature)")
    lr_extractor: float = setting(0.001, "SGD learning rate of the adversarial extractor")
    momentum_extractor: float = setting(0.9, "SGD momentum of the adversarial extractor")
    extractor_width: int = setting(128, "channels of the extractor ConvNetD3 (instance norm)")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        if self.learn_labels:
            raise ValueError("HaBa learns no labels (the ref's hard labels); set learn_labels=False")
        if self.num_hallucinators < 1 or self.bases_per_class < 0:
            raise ValueError(f"need num_hallucinators >= 1 and bases_per_class >= 0, got "
                             f"{self.num_hallucinators}, {self.bases_per_class}")
        check_positive(lr_hallucinator=self.lr_hallucinator, temperature=self.temperature,
                       extractor_width=self.extractor_width)
        extractor_terms = (self.lambda_cls, self.lambda_likelihood, self.lambda_contrast)
        if self.lambda_adversarial < 0 or min(extractor_terms) < 0:
            raise ValueError("the HaBa loss weights must be >= 0")
        if self.adversarial:
            if self.num_hallucinators < 2:
                raise ValueError("the adversarial term compares two hallucinators: "
                                 "num_hallucinators >= 2 (or lambda_adversarial=0)")
            check_positive(lr_extractor=self.lr_extractor)
        elif any(extractor_terms):
            raise ValueError("the extractor's terms act only through lambda_adversarial > 0; with "
                             "lambda_adversarial=0 set lambda_cls, lambda_likelihood and "
                             "lambda_contrast to 0")

    @property
    def adversarial(self) -> bool:
        """The adversarial extractor and its terms are on."""
        return self.lambda_adversarial > 0

    def real_images_per_class(self) -> int:
        """Distinct real images per class that real init draws: ``bases_per_class``, or
        with 0 the bound ``max(1, ipc - 1)`` on the budget's count (hallucinators take
        some of the budget)."""
        return self.bases_per_class or max(1, self.ipc - 1)

    def bases_for(self, num_classes: int, image_shape: tuple[int, ...]) -> int:
        """Bases per class of a run on ``num_classes`` classes of ``image_shape``."""
        return self.bases_per_class or ghal.bases_for_budget(
            self.ipc, num_classes, self.num_hallucinators, image_shape)


# ------------------------------------------------------------------------ losses
def cosine_similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Row-wise cosine similarity of ``[B, D]`` arrays -> ``[B]`` (torch's eps)."""
    norms = jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), eps)
    return jnp.sum(a * b, axis=-1) / norms


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows of ``[B, D]`` scaled to unit length (``F.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def supervised_contrastive(features: jax.Array, labels: jax.Array, temperature: float = 0.07,
                           base_temperature: float = 0.07) -> jax.Array:
    """Supervised contrastive loss (Khosla et al. 2020; the ref's ``SupConLoss``, mode
    'all').

    Args:
      features: ``[B, V, D]`` (V views per sample, usually L2-normalised).
      labels: int ``[B]``; samples of a class are each other's positives.

    Returns:
      float32 scalar: mean over the ``V*B`` anchors of ``-(T / T_base) *`` the mean log
      probability of the anchor's positives (every other row of its class) among all
      other rows, logits = dot products / T.
    """
    b, v = features.shape[:2]
    rows = jnp.swapaxes(features, 0, 1).reshape(v * b, -1)  # view-major, as torch.cat(unbind(., 1))
    row_labels = jnp.tile(labels, v)
    logits = rows @ rows.T / temperature
    logits = logits - jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
    others = 1.0 - jnp.eye(v * b)
    positive = (row_labels[:, None] == row_labels[None, :]) * others
    log_prob = logits - jnp.log(jnp.sum(jnp.exp(logits) * others, axis=1, keepdims=True))
    mean_pos = jnp.sum(positive * log_prob, axis=1) / jnp.sum(positive, axis=1)
    return -(temperature / base_temperature) * jnp.mean(mean_pos)


def _logits_and_embedding(module: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    emb = module.embed(x, True)
    return module.head(emb), emb


def two_distinct(key: jax.Array, n: int) -> jax.Array:
    """int32 ``[2]``: two distinct draws from ``0 .. n-1`` (ref ``randperm(n)[:2]``)."""
    return jax.random.permutation(key, n)[:2].astype(jnp.int32)


# ------------------------------------------------------------------------ builder
@registry.register("haba", HaBaSettings, needs_buffer=True)
def make(s: HaBaSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """HaBa on the selected real data ``real`` (``configs/haba.py``).

    Raises:
      gold.distill.buffer.BufferError: as MTT (missing / incompatible buffer, another
        selection).
      ValueError: bad settings, a batch larger than the number of bases.
    """
    v = s.resolved
    k, shape = real.num_classes, real.image_shape
    b, h, steps = s.bases_for(k, shape), s.num_hallucinators, v["syn_steps"]
    par = ghal.Hallucinated(k, b, h, shape)
    batch_syn = v["batch_syn"] or par.num_bases
    if batch_syn > par.num_bases:
        raise ValueError(f"batch_syn={batch_syn} exceeds the {par.num_bases} bases")
    apply, num_params = flat_apply_fn(config_utils.build_model(config.model, k, shape), shape)
    experts, manifest = mtt.load_experts(s, config, real, num_params)
    spec = common.SyntheticSpec(par, k, lr_init=v["syn_lr_init"])
    tx = spec.optimizer(images=par.optimizer(common.sgd(v["lr_img"], s.momentum_img),
                                             common.sgd(s.lr_hallucinator, s.momentum_hallucinator)),
                        lr=common.sgd(v["lr_lr"], s.momentum_lr))
    extractor = gmodels.get_model("convnet", k, shape, width=s.extractor_width)
    tx_ext = common.sgd(s.lr_extractor, s.momentum_extractor)

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        k_img, k_order, k_ext = jax.random.split(key, 3)
        extra = mtt.expert_order_state(k_order)
        if s.adversarial:
            ext = gnn.init_variables(extractor, k_ext, shape)["params"]
            extra.update(extractor=ext, extractor_opt=tx_ext.init(ext))
        return common.DistillState.start(spec.init(k_img, real_, s.init), tx, extra)

    def views(images, ext, base_idx, pair, key):
        """Extractor (logits, embeddings) of ``base_idx`` through the two hallucinators
        ``pair`` (DSA per sample): ``[2B, K]``, ``[2B, F]`` (first view first)."""
        x = jnp.concatenate([par.minibatch(images, base_idx, jnp.full_like(base_idx, j))[0]
                             for j in (pair[0], pair[1])])
        if gaug.parse_strategy(s.dsa_strategy):
            x = gaug.dsa(key, x, s.dsa_strategy, siamese=False)
        return extractor.apply({"params": ext}, x, method=_logits_and_embedding)

    def synthetic_loss(params, ext, theta_start, theta_target, idx, which, aug_keys, adv):
        """(matching + adversarial loss, (matching loss, adversarial term, inner CE))."""
        images = params["images"]
        fetch = lambda d: par.minibatch(images, d[0], jnp.full_like(d[0], d[1]))
        end, inner = mtt.student_unroll(apply, fetch, spec.lr_of(params), theta_start, (idx, which),
                                        aug_keys, dsa_strategy=s.dsa_strategy, remat=s.remat)
        match = mtt.matching_loss(end, theta_start, theta_target)
        adv_term = jnp.float32(0.0)
        if s.adversarial:
            _, emb = views(images, ext, *adv)
            e0, e1 = jnp.split(emb, 2)
            adv_term = s.lambda_adversarial * jnp.mean((cosine_similarity(e0, e1) + 1.0) / 2.0)
        return match + adv_term, (match, adv_term, jnp.mean(inner))

    def extractor_loss(ext, images, base_idx, pair, key):
        logits, emb = views(images, ext, base_idx, pair, key)
        labels = par.base_labels()[base_idx]
        e0, e1 = jnp.split(emb, 2)
        ce = jnp.mean(gnn.per_sample_cross_entropy(logits, jnp.tile(labels, 2)))
        likeli = jnp.mean((1.0 - cosine_similarity(e0, e1)) / 2.0)
        con = supervised_contrastive(jnp.stack([l2_normalize(e0), l2_normalize(e1)], 1), labels,
                                     s.temperature, s.temperature)
        return s.lambda_cls * ce + s.lambda_likelihood * likeli + s.lambda_contrast * con

    grad_syn = jax.value_and_grad(synthetic_loss, has_aux=True)
    grad_ext = jax.value_and_grad(extractor_loss)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        del real_  # the real data reach HaBa only through the experts
        k_e, k_s, k_idx, k_hal, k_aug, k_adv, k_ext, k_adv_aug, k_ext_aug = jax.random.split(key, 9)
        theta_start, theta_target, e, start = mtt.expert_segment(s, experts, state, k_e, k_s)
        # student chunks, then the adversarial chunk, then the extractor's (ref order)
        idx = mtt.minibatch_indices(k_idx, par.num_bases, batch_syn, steps + 2)
        which = jax.random.randint(k_hal, (steps,), 0, h)
        ext = state.extra.get("extractor")
        adv = (idx[steps], two_distinct(k_adv, h), k_adv_aug) if s.adversarial else None
        (loss, (match, adv_term, inner)), grads = grad_syn(
            state.params, ext, theta_start, theta_target, idx[:steps], which,
            jax.random.split(k_aug, steps), adv)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)
        params = {**params, "lr": jnp.maximum(params["lr"], s.min_syn_lr)}
        extra, ext_loss = state.extra, jnp.float32(0.0)
        if s.adversarial:
            ext_loss, g = grad_ext(ext, params["images"], idx[steps + 1], two_distinct(k_ext, h),
                                   k_ext_aug)
            ext, ext_opt = common.apply_update(tx_ext, ext, state.extra["extractor_opt"], g)
            extra = {**extra, "extractor": ext, "extractor_opt": ext_opt}
        metrics = {"loss": loss, "param_loss": match, "adversarial_loss": adv_term,
                   "extractor_loss": ext_loss, "syn_lr": params["lr"], "inner_ce": inner,
                   **mtt.segment_metrics(e, start)}
        return state.replace(params=params, opt_state=opt_state, extra=extra), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)._replace(factors=ghal.factors(state.params["images"]))

    pixels = s.ipc * k * math.prod(shape)
    settings = {**dataclasses.asdict(s), **v, "batch_syn": batch_syn, "algorithm": "haba",
                "bases_per_class": b, "images_per_class": par.per_class,
                "hallucinator_size": ghal.hallucinator_size(shape),
                "storage_per_class": (ghal.storage(k, b, h, shape) + 1) / k,
                "pixel_storage_per_class": (pixels + 1) / k,
                **mtt.buffer_facts(manifest, num_params, int(experts.shape[0]), config)}
    return common.Algorithm("haba", init, step, synthetic, settings)


__all__ = ["HaBaSettings", "cosine_similarity", "l2_normalize", "make", "supervised_contrastive",
           "two_distinct"]
