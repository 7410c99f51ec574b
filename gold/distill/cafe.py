"""CAFE: Condensing datasets by Aligning FEatures (Wang et al., CVPR 2022).

Reference kaiwang960112/CAFE ``distill.py`` / ``networks.py``. One ``step`` = one
reference iteration (``for it in range(Iteration)``):

1. a freshly initialised network (``config.model``), trained only on the synthetic set
   below; the image lr of this iteration is ``lr_img`` halved at 1200, 1600 and 1800
   (``lr_decay_iterations``; ref ``adjust_learning_rate``), an optax schedule of the
   iteration counter injected into the image optimiser (``optax.inject_hyperparams``);
2. the dynamic bi-level loop, as nested ``lax.while_loop``s:

   a. one image step (SGD, momentum 0.5) on the loss :func:`cafe_loss` of a real batch of
      ``batch_real`` images per class (the halving rule) and the synthetic set, both
      through the current network in training mode (DSA variant: the same DSA draw on a
      class's real batch and its synthetic images, ``dsa_strategy``);
   b. the network's accuracy on ``acc_batch_per_class`` fresh real images per class
      goes into a window of the last ``window`` (10) values; once the window is full and
      its range (max - min) is below ``stall`` (ref ``lambda_1`` 0.04) the iteration ends
      ("stop inner image steps when accuracy stalls");
   c. otherwise (and unless the bound ``max_image_steps`` ends the iteration here) the
      network trains epochs of SGD (``lr_net`` 0.01, batch ``batch_train``;
      per-sample DSA in the DSA variant) on the synthetic set, measuring the real
      accuracy after each into a fresh window, until a full window's range exceeds
      ``move`` (ref ``lambda_2`` 0.03) ("train the net until real accuracy moves"); then
      back to (a).

Deviations, all forced by a pure jitted step or fixing reference slips:

* The reference's two ``while True`` loops are unbounded Python loops; here they are
  ``lax.while_loop`` conditions with bounds ``max_image_steps`` and ``max_net_epochs``
  (the host never looks at the accuracies). Metrics report how many image steps and
  network epochs each iteration ran, so a bound that binds is visible.
* The reference never resets its accuracy accumulator between measurements
  (``acc_test += ...; acc_test /= num_classes``: a running value ~1.1x the accuracy);
  here each measurement is the plain mean accuracy over classes.
* Its ``loss_real`` (cross-entropy of the real batch) does not depend on the synthetic
  images and the network's gradients it leaves are zeroed before each network step, so
  it changes nothing and is not computed.

Aligned layers (ref ``ConvNet.forward`` for depth 3): each block's activation before
pooling and the last block's pooled output (``ConvNet.taps``), weights ``layer_weights``
(0.1, 0.1, 1, 1: ref ``fourth/third/second/first_weight``); a shallower network uses
the last ``depth + 1`` weights. The reference also adds the class-mean alignment of the
flattened embedding with weight 1 (``embed_weight``; the same numbers as the last layer),
and ``discrimination_weight`` (0.01, ref ``inner_weight``) x the summed cross-entropy of
real embeddings scored against the class-mean synthetic embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gold import augment as gaug
from gold import config_utils
from gold import nn as gnn
from gold.distill import common
from gold.distill import matching
from gold.distill import registry
from gold.distill.settings import check_positive, setting


@dataclasses.dataclass(frozen=True)
class CAFESettings(common.PixelSGDSettings, common.NetworkTrainingSettings):
    """CAFE hyper-parameters (ref ``distill.py`` argparse defaults): 2000 iterations,
    noise init, images by SGD lr 0.1 momentum 0.5 halved at 1200/1600/1800, network by
    SGD lr 0.01 batch 256; no DSA (the DSA variant sets ``dsa_strategy``)."""

    iterations: int = 2000
    dsa_strategy: str = "none"
    layer_weights: tuple = setting((0.1, 0.1, 1.0, 1.0), "weights of the aligned layers: each block's "
                                   "activation before pooling, then the last block's pooled output")
    embed_weight: float = setting(1.0, "weight of the class-mean alignment of the flattened embedding")
    discrimination_weight: float = setting(0.01, "weight of the summed CE of real embeddings against "
                                                 "class-mean synthetic embeddings (ref inner_weight)")
    lr_decay_iterations: tuple = setting((1200, 1600, 1800), "iterations from which lr_img is multiplied by lr_decay")
    lr_decay: float = setting(0.5, "factor of each lr_img drop")
    acc_batch_per_class: int = setting(128, "real images per class that measure the network's accuracy")
    window: int = setting(10, "accuracy measurements in the stall / move window")
    stall: float = setting(0.04, "image steps stop when a full window's accuracy range is below this (ref lambda_1)")
    move: float = setting(0.03, "network epochs stop when a full window's accuracy range exceeds this (ref lambda_2)")
    max_image_steps: int = setting(100, "bound on the image steps of one iteration (ref: unbounded)")
    max_net_epochs: int = setting(100, "bound on the network epochs between two image steps (ref: unbounded)")

    def validate(self) -> None:
        """ValueError on a bad value, or a bound that keeps the window from filling."""
        super().validate()
        check_positive(lr_img=self.lr_img, lr_net=self.lr_net, batch_train=self.batch_train,
                       acc_batch_per_class=self.acc_batch_per_class, stall=self.stall,
                       lr_decay=self.lr_decay)
        if self.window < 2 or self.move < 0:
            raise ValueError(f"window must be >= 2 and move >= 0, got {self.window}, {self.move}")
        if min(self.max_image_steps, self.max_net_epochs) < self.window:
            raise ValueError(f"max_image_steps ({self.max_image_steps}) and max_net_epochs "
                             f"({self.max_net_epochs}) must be >= window ({self.window}), or the "
                             f"stall / move tests never run")
        if not self.layer_weights:
            raise ValueError("layer_weights must name at least one weight")

    def weights_for(self, num_taps: int) -> tuple[float, ...]:
        """The last ``num_taps`` layer weights.

        Raises:
          ValueError: fewer weights than taps (a deeper network needs explicit weights).
        """
        if len(self.layer_weights) < num_taps:
            raise ValueError(f"the network has {num_taps} aligned layers but layer_weights has "
                             f"{len(self.layer_weights)}; set config.layer_weights")
        return tuple(float(w) for w in self.layer_weights[-num_taps:])

    def lr_schedule(self) -> optax.Schedule:
        """``iteration -> lr_img`` (piecewise constant)."""
        return optax.piecewise_constant_schedule(
            self.lr_img, {int(i): self.lr_decay for i in self.lr_decay_iterations})


class Window(NamedTuple):
    """The last ``W`` accuracy measurements (oldest first) and how many were made."""

    values: jax.Array  # float32 [W]
    count: jax.Array   # int32

    @classmethod
    def empty(cls, size: int) -> "Window":
        """No measurement yet."""
        return cls(jnp.zeros((size,), jnp.float32), jnp.int32(0))

    def push(self, value: jax.Array) -> "Window":
        """Append ``value``, dropping the oldest."""
        return Window(jnp.concatenate([self.values[1:], value[None].astype(jnp.float32)]), self.count + 1)

    def spread(self) -> jax.Array:
        """float32 range (max - min) of a full window; NaN before it is full (compares False)."""
        full = self.count >= self.values.shape[0]
        return jnp.where(full, jnp.max(self.values) - jnp.min(self.values), jnp.nan)


def cafe_loss(taps_real: list[jax.Array], taps_syn: list[jax.Array], real_weights: jax.Array,
              layer_weights: tuple[float, ...], embed_weight: float,
              discrimination_weight: float) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """CAFE's image loss from per-class features.

    Args:
      taps_real: per aligned layer ``[K, B, ...]`` real features (the last layer is the
        embedding before flattening).
      taps_syn: per layer ``[K, M, ...]`` synthetic features.
      real_weights: ``[K, B]`` (0 = padding of a small class).
      layer_weights, embed_weight, discrimination_weight: see :class:`CAFESettings`.

    Returns:
      (loss, (alignment over layers and embedding, discrimination CE sum)).
    """
    align = matching.layered_mean_distance(taps_real, taps_syn, layer_weights, real_weights)
    er, es = (f.reshape(*f.shape[:2], -1) for f in (taps_real[-1], taps_syn[-1]))
    align = align + embed_weight * matching.mean_embedding_distance(er, es, real_weights)
    disc = matching.mean_embedding_discrimination(er, es, real_weights)
    return align + discrimination_weight * disc, (align, disc)


def set_lr(opt_state: Any, lr: jax.Array) -> Any:
    """``opt_state`` of an ``optax.inject_hyperparams`` optimiser with ``lr`` set."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "lr": jnp.asarray(lr, jnp.float32)})


@registry.register("cafe", CAFESettings)
def make(s: CAFESettings, config: Any, real: common.RealData) -> common.Algorithm:
    """CAFE (or its DSA variant with ``dsa_strategy``) on ``real`` (``configs/cafe.py``).

    Raises:
      ValueError: a network without feature taps (not a ConvNet), or with more aligned
        layers than ``layer_weights``.
    """
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    has_bn = common.has_batchnorm(model, shape)
    if not hasattr(model, "taps"):
        raise ValueError(f"CAFE aligns per-block features (ConvNet.taps) and model.name="
                         f"{config.model.name!r} has no taps; use model.name='convnet'")
    num_taps = len(jax.eval_shape(lambda: model.apply(
        gnn.init_variables(model, jax.random.key(0), shape), jnp.zeros((1, *shape)), method=model.taps)))
    layer_weights = s.weights_for(num_taps)
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k)
    tx = optax.inject_hyperparams(lambda lr: spec.optimizer(common.sgd(lr, s.momentum_img)))(lr=s.lr_img)
    schedule = s.lr_schedule()
    tx_net = gnn.sgd(s.lr_net, s.momentum_net, 0.0)
    use_dsa = bool(gaug.parse_strategy(s.dsa_strategy))
    m, b = spec.per_class, real.batch
    y_syn = spec.hard_labels()

    def taps(variables, x):
        if has_bn:
            return model.apply(variables, x, train=True, method=model.taps, mutable=["batch_stats"])[0]
        return model.apply(variables, x, train=True, method=model.taps)

    def augment_pair(key, xr, xs):
        """The same DSA draw on one class's real batch and synthetic images."""
        p = gaug.sample_dsa_params(key, 1, shape[:2], s.dsa_strategy)
        return gaug.apply_dsa(xr, p), gaug.apply_dsa(xs, p)

    def image_loss(variables, real_, x_syn, key):
        k_real, k_aug = jax.random.split(key)
        xr, wr = common.real_all_classes(real_, k_real, b)
        xr, xs = xr.reshape(k, b, *shape), x_syn.reshape(k, m, *shape)
        if use_dsa:
            xr, xs = jax.vmap(augment_pair)(jax.random.split(k_aug, k), xr, xs)
        by_class = lambda fs, n: [f.reshape(k, n, *f.shape[1:]) for f in fs]
        taps_real = by_class(jax.lax.stop_gradient(taps(variables, xr.reshape(k * b, *shape))), b)
        taps_syn = by_class(taps(variables, xs.reshape(k * m, *shape)), m)
        return cafe_loss(taps_real, taps_syn, wr.reshape(k, b), layer_weights, s.embed_weight,
                         s.discrimination_weight)

    def real_accuracy(variables, real_, key):
        """Mean over classes of the accuracy on fresh real images (padding weighted out)."""
        x, w = common.real_all_classes(real_, key, s.acc_batch_per_class)
        y = jnp.repeat(jnp.arange(k), s.acc_batch_per_class)
        logits, _ = gnn.apply_model(model, variables, x, train=False)
        correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32).reshape(k, -1)
        w = w.reshape(k, -1)
        return jnp.mean(jnp.sum(correct * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0))

    def train_until_moves(net, x_syn, real_, key):
        """Network epochs on the synthetic set until the real accuracy moves (or the bound)."""
        augment = (lambda kk, xb: gaug.dsa(kk, xb, s.dsa_strategy, siamese=False)) if use_dsa else None

        def cond(c):
            _, window, epochs = c
            return jnp.logical_and(epochs < s.max_net_epochs, ~(window.spread() > s.move))

        def body(c):
            net, window, epochs = c
            k_train, k_acc = jax.random.split(jax.random.fold_in(key, epochs))
            net = common.train_network(model, tx_net, net, x_syn, y_syn, k_train, epochs=1,
                                       batch_size=s.batch_train, augment=augment)
            return net, window.push(real_accuracy(net.variables, real_, k_acc)), epochs + 1

        net, _, epochs = jax.lax.while_loop(cond, body, (net, Window.empty(s.window), jnp.int32(0)))
        return net, epochs

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        return common.DistillState.start(spec.init(key, real_, s.init), tx)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        k_net, k_loop = jax.random.split(key)
        variables = gnn.init_variables(model, k_net, shape)
        net = gnn.TrainState(variables, tx_net.init(variables["params"]))
        lr = schedule(state.iteration)
        state = state.replace(opt_state=set_lr(state.opt_state, lr))
        zero = jnp.zeros((), jnp.float32)

        def cond(c):
            _, _, window, steps, _, _, _ = c
            return jnp.logical_and(steps < s.max_image_steps, ~(window.spread() < s.stall))

        def body(c):
            st, net, window, steps, epochs, sums, _ = c
            k_img, k_acc, k_net_train = jax.random.split(jax.random.fold_in(k_loop, steps), 3)
            grad_fn = jax.value_and_grad(lambda x: image_loss(net.variables, real_, x, k_img), has_aux=True)

            def image_grad(x_syn):
                (loss, (align, disc)), gx = grad_fn(x_syn)
                return gx, jnp.stack([loss, align, disc])

            st, parts = common.image_gradient_step(tx, spec, st, image_grad)
            acc = real_accuracy(net.variables, real_, k_acc)
            window = window.push(acc)
            last = jnp.logical_or(window.spread() < s.stall, steps + 1 >= s.max_image_steps)
            net, more = jax.lax.cond(
                last, lambda n: (n, jnp.int32(0)),
                lambda n: train_until_moves(n, spec.images_of(st.params), real_, k_net_train), net)
            return st, net, window, steps + 1, epochs + more, sums + parts, acc

        init_carry = (state, net, Window.empty(s.window), jnp.int32(0), jnp.int32(0), jnp.zeros((3,)), zero)
        state, _, _, steps, epochs, sums, acc = jax.lax.while_loop(cond, body, init_carry)
        mean = sums / jnp.maximum(steps, 1).astype(jnp.float32)
        metrics = {"loss": mean[0], "align": mean[1], "discrimination": mean[2],
                   "image_steps": steps.astype(jnp.float32), "net_epochs": epochs.astype(jnp.float32),
                   "real_accuracy": acc, "lr_img": jnp.asarray(lr, jnp.float32)}
        return state, metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), "algorithm": "cafe", "batch_real": real.batch,
                "aligned_layers": num_taps, "layer_weights_used": list(layer_weights),
                "has_batchnorm": has_bn}
    return common.Algorithm("cafe", init, step, synthetic, settings)


__all__ = ["CAFESettings", "Window", "cafe_loss", "make", "set_lr"]
