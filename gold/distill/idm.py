"""IDM: Improved Distribution Matching for Dataset Condensation (Zhao et al., CVPR 2023).

Reference uitrbn/IDM ``IDM_cifar10.py`` with the flags of its ``command.txt``
(``--net_train_real --net_decay --embed_last 1000 --syn_ce --aug --outer_loop 1
--mismatch_lambda 0 --train_net_num 1``). DM with three changes:

* **Quadrants** (``--aug``): every stored image is a 2 x 2 grid of images, each crop
  bilinearly upsampled to full size (:class:`gold.distill.formation.MultiFormation`,
  ``factor`` 2, stored in the real data's normalised units); the label repeats 4 times.
* **A queue of networks trained on real data** (:mod:`gold.distill.netpool`, in
  ``DistillState.extra['pool']``): ``initial_nets`` (3) fresh networks at the start;
  a fresh one pushed at every iteration ``it % net_generate_interval == 0`` (the oldest
  leaves once ``pool_size`` (100) are queued); after the image update ``train_nets`` (2)
  networks drawn uniformly from the queue take ``net_train_steps`` (10) SGD steps
  (lr 0.01, momentum 0.9, weight decay 5e-4) on uniformly drawn real batches of
  ``batch_train`` (256) images of all classes.
* **Cross-entropy on the synthetic images**, weighted by the matching network's
  training accuracy in PERCENT (torchnet's ``ClassErrorMeter`` since the meters were
  last reset; the reference resets them at every evaluation, ``acc_reset_every``).

One ``step`` = one reference iteration:

1. reset the accuracy meters when ``it > 0`` and ``it % acc_reset_every == 0``; push a
   fresh network when ``it % net_generate_interval == 0``;
2. draw ``match_nets`` networks from the queue; for each, for every class c in turn (a
   ``lax.scan``: the reference takes one SGD step on the whole image tensor per class,
   so the momentum of every image moves K times per iteration): decode the class's
   stored images (4 * ipc), a real batch of the class (``real.batch``), one Siamese DSA
   draw on both, the penultimate features (``model.embed``, evaluation mode: the
   reference's ``net.eval()``), and
   ``loss_c = ||mean(real emb) - mean(syn emb)||^2 + ce_weight * acc * CE(net(syn), c)``
   (CE averaged over the class's decoded images); one SGD step (lr ``lr_img`` 0.2,
   momentum 0.5) on the stored images with ``d loss_c``;
3. train ``train_nets`` networks of the queue on real data (above).

``metrics['loss']`` is the reference's ``loss_avg``: the sum of ``loss_c`` over classes
(and matching networks) / K.

Deviations: real init shrinks the 4 real images of a stored image with 'nearest'
sampling (IDC's ``init_type='mix'``, the shared multi-formation init) where IDM's
``downscale`` is bilinear (a 2 x 2 average); the networks' real batches are drawn with
replacement (the reference permutes the whole training set for every batch).
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
from gold.distill.formation import MultiFormation
from gold.distill.netpool import NetPool, NetPoolSpec
from gold.distill.settings import check_positive, setting


@dataclasses.dataclass(frozen=True)
class IDMSettings(common.PixelSGDSettings, common.NetworkTrainingSettings):
    """IDM hyper-parameters (reference ``command.txt``, CIFAR-10)."""

    iterations: int = 20000
    init: str = "real"
    lr_img: float = 0.2
    lr_net: float = 0.01
    momentum_net: float = 0.9
    batch_train: int = setting(256, "real images per SGD step of a queued network (ref --trained_bs)")
    weight_decay_net: float = setting(5e-4, "weight decay of the queued networks' SGD (ref --net_decay)")
    factor: int = setting(2, "multi-formation factor: f x f decoded images per stored image "
                             "(2 = the reference's quadrants, --aug; 1 = plain pixels)")
    ce_weight: float = setting(0.5, "weight of the accuracy-weighted cross-entropy on synthetic "
                                    "images (ref --ce_weight; 0 = off)")
    pool_size: int = setting(100, "most networks in the queue (ref --net_num)")
    initial_nets: int = setting(3, "fresh networks in the queue at iteration 0, before the first push")
    net_generate_interval: int = setting(30, "a fresh network joins the queue every this many "
                                             "iterations (ref --net_generate_interval)")
    match_nets: int = setting(1, "queued networks that match distributions per iteration "
                                 "(ref --train_net_num)")
    train_nets: int = setting(2, "queued networks trained on real data per iteration "
                                 "(ref --fetch_net_num)")
    net_train_steps: int = setting(10, "SGD steps of each trained network per iteration "
                                       "(ref --model_train_steps)")
    acc_reset_every: int = setting(100, "iterations between resets of the networks' accuracy "
                                        "meters (the reference resets them at each evaluation, "
                                        "--eval_interval)")

    def validate(self) -> None:
        """ValueError on a bad value or a setting that cannot take effect."""
        super().validate()
        check_positive(lr_img=self.lr_img, lr_net=self.lr_net, batch_train=self.batch_train,
                       factor=self.factor, pool_size=self.pool_size,
                       net_generate_interval=self.net_generate_interval, match_nets=self.match_nets,
                       acc_reset_every=self.acc_reset_every)
        if self.ce_weight < 0 or self.weight_decay_net < 0:
            raise ValueError(f"ce_weight and weight_decay_net must be >= 0, got "
                             f"{self.ce_weight}, {self.weight_decay_net}")
        if self.train_nets < 0 or self.net_train_steps < 0:
            raise ValueError(f"train_nets and net_train_steps must be >= 0, got "
                             f"{self.train_nets}, {self.net_train_steps}")
        if not 0 <= self.initial_nets <= self.pool_size:
            raise ValueError(f"initial_nets must be in [0, pool_size={self.pool_size}], "
                             f"got {self.initial_nets}")
        # at iteration 0 the queue holds min(initial_nets + 1, pool_size) networks
        first = min(self.initial_nets + 1, self.pool_size)
        if max(self.match_nets, self.train_nets) > first:
            raise ValueError(f"match_nets={self.match_nets} and train_nets={self.train_nets} must "
                             f"not exceed the {first} networks queued at iteration 0 "
                             f"(raise initial_nets or pool_size)")
        if self.ce_weight > 0 and self.train_nets * self.net_train_steps == 0:
            raise ValueError("ce_weight > 0 weights the cross-entropy by the networks' training "
                             "accuracy, which stays 0 when no network is trained "
                             "(train_nets or net_train_steps is 0): set ce_weight=0")

    def real_images_per_class(self) -> int:
        """Real init tiles ``ipc * factor^2`` distinct images per class."""
        return self.ipc * self.factor ** 2


@registry.register("idm", IDMSettings)
def make(s: IDMSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """IDM on ``real`` (``configs/idm.py``)."""
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    form = MultiFormation(k, s.ipc, shape, s.factor)  # stored in the real data's units
    spec = common.SyntheticSpec(form, k)
    tx = spec.optimizer(common.sgd(s.lr_img, s.momentum_img))
    pool_spec = NetPoolSpec(model, gnn.sgd(s.lr_net, s.momentum_net, s.weight_decay_net), shape,
                            s.pool_size)
    use_dsa = bool(gaug.parse_strategy(s.dsa_strategy))

    def embed_and_logits(variables, x):
        """Penultimate features ``[B, F]`` and logits ``[B, K]`` (evaluation mode)."""
        emb = model.apply(variables, x, train=False, method=model.embed)
        return emb, model.apply(variables, x, train=False)

    def class_loss(variables, weight, real_, c, stored_c, key):
        """``(loss_c, (distance, ce))`` of class c from its stored images ``[ipc, H, W, C]``;
        ``weight`` is the network's accuracy in percent."""
        k_real, k_aug = jax.random.split(key)
        x_c = form.decode_stored(stored_c)
        xr, mask = common.real_class_batch(real_, k_real, c)
        if use_dsa:  # (static) one Siamese draw for the real and the synthetic batch
            p = gaug.sample_dsa_params(k_aug, 1, shape[:2], s.dsa_strategy)
            xr, x_c = gaug.apply_dsa(xr, p), gaug.apply_dsa(x_c, p)
        er, _ = embed_and_logits(variables, xr)
        es, logits = embed_and_logits(variables, x_c)
        dist = matching.mean_embedding_distance(jax.lax.stop_gradient(er), es, mask)
        ce = jnp.mean(gnn.per_sample_cross_entropy(logits, jnp.full(logits.shape[:1], c)))
        return dist + s.ce_weight * weight * ce, (dist, ce)

    def class_update(st: common.DistillState, variables, weight, real_, c, key):
        """One SGD step on all stored images with class c's gradient (zero elsewhere)."""
        x = st.params["images"]["x"]
        by_class = x.reshape(k, s.ipc, *shape)
        (loss, aux), g_c = jax.value_and_grad(
            lambda xc: class_loss(variables, weight, real_, c, xc, key), has_aux=True)(by_class[c])
        grads = {"images": {"x": jnp.zeros_like(by_class).at[c].set(g_c).reshape(x.shape)}}
        params, opt_state = common.apply_update(tx, st.params, st.opt_state, grads)
        return st.replace(params=params, opt_state=opt_state), (loss, *aux)

    def real_batch(real_: common.RealData):
        """``key -> (images [batch_train, ...], labels)``: uniform over all real images."""
        def draw(key):
            idx = jax.random.randint(key, (s.batch_train,), 0, real_.num_real)
            return real_.x[idx], real_.y[idx]
        return draw

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        k_img, k_pool = jax.random.split(key)
        pool = pool_spec.init(k_pool, s.initial_nets)
        return common.DistillState.start(spec.init(k_img, real_, s.init), tx, extra={"pool": pool})

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_push, k_pick, k_match, k_train_pick, k_train = jax.random.split(key, 5)
        it = state.iteration
        pool: NetPool = state.extra["pool"]
        pool = jax.lax.cond((it > 0) & (it % s.acc_reset_every == 0), NetPool.reset_meters,
                            lambda p: p, pool)
        pool = jax.lax.cond(it % s.net_generate_interval == 0,
                            lambda p: pool_spec.push(p, k_push), lambda p: p, pool)
        acc = pool.accuracy()
        st = state
        totals = []
        for j, slot in enumerate(pool_spec.sample(pool, k_pick, s.match_nets)):
            variables, weight = pool.slot(slot), acc[slot]
            k_j = jax.random.fold_in(k_match, j)

            def class_body(st_, c, variables=variables, weight=weight, k_j=k_j):
                return class_update(st_, variables, weight, real_, c, jax.random.fold_in(k_j, c))

            st, per_class = jax.lax.scan(class_body, st, jnp.arange(k, dtype=jnp.int32))
            totals.append(jnp.stack([jnp.sum(v) for v in per_class] + [weight]))
        if s.train_nets and s.net_train_steps:  # (static)
            slots = pool_spec.sample(pool, k_train_pick, s.train_nets)
            pool = pool_spec.train(pool, slots, k_train, real_batch(real_), s.net_train_steps)
        loss, dist, ce, weight = jnp.sum(jnp.stack(totals), axis=0) / jnp.array([k, k, k, s.match_nets])
        metrics = {"loss": loss, "distance": dist, "ce_syn": ce, "net_acc": weight,
                   "pool_size": pool.num_valid().astype(jnp.float32)}
        return st.replace(extra={**state.extra, "pool": pool}), metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "algorithm": "idm", "batch_real": real.batch,
                "images_per_class": form.per_class}
    return common.Algorithm("idm", init, step, synthetic, settings)


__all__ = ["IDMSettings", "make"]
