"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Reference GeorgeCazenavette/mtt-distillation ``distill.py``. One ``step`` = one
reference iteration:

1. the next expert ``e`` of a shuffled cycle through the buffer (the ref shuffles its
   experts and walks through them, reshuffling after each pass;
   ``expert_order='random'`` draws uniformly instead) and a start epoch
   ``s ~ U{0, ..., max_start_epoch - 1}`` (ref ``np.random.randint(0, max_start_epoch)``);
   ``theta_start = params[e, s]``, ``theta_target = params[e, s + expert_epochs]``;
2. unroll ``syn_steps`` SGD steps of a student that starts at ``theta_start``
   (functional model on flat parameters, no momentum, lr = the learnable synthetic lr)
   on minibatches of ``batch_syn`` synthetic images (a fresh permutation of the set
   whenever it is used up; default batch = the whole set), each minibatch with DSA
   (per-sample parameters, as the ref's ``DiffAugment(..., param)``), mean
   cross-entropy; ``gold.distill.unroll.unroll`` (``lax.scan``, ``jax.checkpoint``
   per step when ``remat``: memory nearly flat in ``syn_steps``);
3. loss ``||theta_end - theta_target||^2 / ||theta_start - theta_target||^2``
   (:func:`matching_loss` of :func:`student_end`);
4. SGD (momentum 0.5) on the images with ``lr_img`` and on the synthetic lr with
   ``lr_lr`` (per-entry optimisers of ``SyntheticSpec``). The lr is learned raw (not
   through a softplus), initialised at ``syn_lr_init`` (the ref's ``--lr_teacher`` of
   ``distill.py``). ``learn_labels`` also learns soft labels, the softmax of learned
   logits (SGD with ``lr_labels``; the student then uses soft-label cross-entropy).

The learned lr is ``Synthetic.lr``: the loop stores it in ``synthetic.npz`` and the
evaluation networks train with it (ref ``args.lr_net = syn_lr.item()``).

The buffer (``gold.distill.buffer``) is read once in :func:`make` (only the epochs
``0 .. max_start_epoch + expert_epochs - 1`` are kept in memory) and checked: it must
exist and be complete (or hold ``max_experts`` experts), match the dataset, ZCA and
model, store enough epochs, and have been trained on the same real samples as the
distillation sees (unless ``allow_buffer_mismatch``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gold import augment as gaug
from gold import config_utils
from gold import data as gdata
from gold import nn as gnn
from gold.distill import buffer as gbuf
from gold.distill import common
from gold.distill import registry
from gold.distill.settings import check_choice, setting
from gold.distill.unroll import flat_apply_fn, unroll

PER_IPC_FIELDS: tuple[str, ...] = (
    "syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "syn_lr_init", "batch_syn")
EXPERT_ORDERS: tuple[str, ...] = ("cycle", "random")


@dataclasses.dataclass(frozen=True)
class MTTSettings(common.PixelSGDSettings):
    """MTT hyper-parameters (ref mtt-distillation ``distill.py``; ``configs/mtt.py``):
    the paper's 10,000 iterations, real init, momentum 0.5 on images and lr."""

    iterations: int = 10000
    init: str = "real"
    buffer_dir: str = setting("", "the expert buffer (launch/buffer.py --workdir)")
    max_experts: int = setting(0, "> 0: use only the first n experts of the buffer")
    allow_buffer_mismatch: bool = setting(False, "accept experts trained on other real samples")
    expert_order: str = setting("cycle", "cycle (ref: shuffled passes over the buffer) | random")
    per_ipc: tuple = setting((), "rows (ipc, syn_steps, expert_epochs, max_start_epoch, lr_img, "
                                 "lr_lr, syn_lr_init, batch_syn); 0-valued fields come from here")
    syn_steps: int = setting(0, "student steps on the synthetic set (0 = from per_ipc)")
    expert_epochs: int = setting(0, "expert epochs the student must match (0 = from per_ipc)")
    max_start_epoch: int = setting(0, "start epochs are drawn from [0, max_start_epoch) (0 = per_ipc)")
    lr_img: float = setting(0.0, "SGD learning rate of the images (0 = from per_ipc)")
    lr_lr: float = setting(0.0, "SGD learning rate of the learned lr (0 = from per_ipc)")
    syn_lr_init: float = setting(0.0, "initial learned student lr (ref --lr_teacher; 0 = per_ipc)")
    batch_syn: int = setting(0, "synthetic minibatch of a student step (0 = per_ipc; 0 there = all)")
    momentum_lr: float = setting(0.5, "SGD momentum of the learned lr")
    learn_labels: bool = setting(False, "also learn soft labels: the softmax of learned logits "
                                        "(student and evaluation: soft cross-entropy)")
    lr_labels: float = setting(0.0, "SGD learning rate of the learned label logits (momentum_img)")
    label_logit_scale: float = setting(10.0, "initial label logits = this x one-hot")
    remat: bool = setting(True, "jax.checkpoint each unrolled student step")

    def validate(self) -> None:
        """ValueError on a bad value."""
        super().validate()
        check_choice("expert_order", self.expert_order, EXPERT_ORDERS)
        v = self.resolved
        bad = [f"{k}={v[k]}" for k in ("syn_steps", "expert_epochs", "max_start_epoch") if v[k] < 1]
        if bad or v["batch_syn"] < 0:
            raise ValueError(f"MTT needs positive values, got {', '.join(bad) or v}")
        if self.learn_labels and not self.lr_labels > 0:
            raise ValueError("learn_labels=True needs lr_labels > 0")

    @functools.cached_property
    def resolved(self) -> dict:
        """The per-IPC fields: explicit (non-zero) values win, zeros come from
        ``per_ipc`` at the listed IPC nearest to ``ipc``.

        Raises:
          ValueError: a field unset with no ``per_ipc`` row to fill it.
        """
        rows = [tuple(r) for r in self.per_ipc]
        row = min(rows, key=lambda r: (abs(int(r[0]) - self.ipc), int(r[0]))) if rows else None
        out = {}
        for j, name in enumerate(PER_IPC_FIELDS):
            value = getattr(self, name)
            if not value and row is not None:
                value = row[j + 1]
            out[name] = type(getattr(self, name))(value)
        missing = [n for n in PER_IPC_FIELDS[:-1] if not out[n]]
        if missing:
            raise ValueError(f"MTT settings {missing} are unset and per_ipc has no row for them")
        return out


def minibatch_indices(key: jax.Array, num_images: int, batch: int, steps: int) -> jax.Array:
    """int32 ``[steps, batch]``: consecutive chunks of fresh random permutations of
    ``0 .. num_images-1`` (a new permutation whenever one is used up).

    Equals the ref's ``randperm`` + ``split(batch_syn)`` when ``batch`` divides
    ``num_images`` (the ref's smaller last chunk otherwise becomes a full-size chunk
    that runs on into the next permutation: static shapes).
    """
    perms = math.ceil(steps * batch / num_images)
    idx = jax.vmap(lambda k: jax.random.permutation(k, num_images))(jax.random.split(key, perms))
    return idx.reshape(-1)[: steps * batch].reshape(steps, batch).astype(jnp.int32)


def expert_at(order_key: jax.Array, iteration: jax.Array, num_experts: int) -> jax.Array:
    """int32 expert of ``iteration`` in a shuffled cycle: pass ``p = iteration // E``
    walks through ``permutation(fold_in(order_key, p), E)``."""
    cycle = iteration // num_experts
    perm = jax.random.permutation(jax.random.fold_in(order_key, cycle), num_experts)
    return perm[iteration % num_experts].astype(jnp.int32)


def matching_loss(theta_end: jax.Array, theta_start: jax.Array, theta_target: jax.Array) -> jax.Array:
    """``||theta_end - theta_target||^2 / ||theta_start - theta_target||^2`` (flat ``[P]``).

    The ref divides both sums by the number of parameters, which cancels.
    """
    num = jnp.sum(jnp.square(theta_end - theta_target))
    den = jnp.sum(jnp.square(theta_start - theta_target))
    return num / den


def student_unroll(
    apply: Callable[[jax.Array, jax.Array, bool], jax.Array],
    fetch: Callable[[Any], tuple[jax.Array, jax.Array]],
    lr: jax.Array,
    theta_start: jax.Array,
    per_step: Any,
    aug_keys: jax.Array,
    *,
    dsa_strategy: str = gaug.DEFAULT_STRATEGY,
    remat: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """The student's parameters after ``T`` SGD steps on minibatches from ``fetch``.

    Args:
      apply: ``(flat_params [P], x [B, H, W, C], train) -> logits`` (``flat_apply_fn``).
      fetch: ``per_step[t] -> (x [B, H, W, C], labels [B] int or [B, K] soft)``, the
        (differentiable) minibatch of step t: rows of a pixel set (MTT), bases through
        a hallucinator (HaBa), ...
      lr: the (learnable) synthetic lr, float32 scalar.
      theta_start: ``[P]`` starting parameters (an expert's epoch ``s``).
      per_step: pytree with leading axis ``T`` handed to ``fetch`` step by step.
      aug_keys: ``[T]`` PRNG keys, one DSA draw (per-sample parameters) per step.
      dsa_strategy: DSA op-groups ('none' = no augmentation).
      remat: ``jax.checkpoint`` each step.

    Returns:
      (``theta_end [P]``, float32 ``[T]`` mean cross-entropy of each step).
    """
    use_dsa = bool(gaug.parse_strategy(dsa_strategy))

    def step_loss(theta, batch):
        b_data, b_key = batch
        xb, yb = fetch(b_data)
        if use_dsa:
            xb = gaug.dsa(b_key, xb, dsa_strategy, siamese=False)
        return jnp.mean(gnn.per_sample_cross_entropy(apply(theta, xb, True), yb))

    res = unroll(step_loss, theta_start, lr, (per_step, aug_keys), remat=remat)
    return res.params, res.losses


def student_end(
    apply: Callable[[jax.Array, jax.Array, bool], jax.Array],
    x_syn: jax.Array,
    y_syn: jax.Array,
    lr: jax.Array,
    theta_start: jax.Array,
    idx: jax.Array,
    aug_keys: jax.Array,
    *,
    dsa_strategy: str = gaug.DEFAULT_STRATEGY,
    remat: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """:func:`student_unroll` on the rows ``idx [T, B]`` (:func:`minibatch_indices`) of
    a pixel set ``x_syn [M, H, W, C]`` with labels ``y_syn [M]`` (or soft ``[M, K]``)."""
    return student_unroll(apply, lambda i: (x_syn[i], y_syn[i]), lr, theta_start, idx, aug_keys,
                          dsa_strategy=dsa_strategy, remat=remat)


def check_selection(buf: gbuf.ExpertBuffer, real: common.RealData, buffer_dir: str,
                    config_selection: Any) -> None:
    """Raise :class:`gold.distill.buffer.BufferError` when the buffer's experts were
    trained on other real samples than ``real`` (the distillation's selection)."""
    mine = gbuf.selection_fingerprint(np.asarray(real.x), np.asarray(real.y), real.num_classes)
    counts = np.bincount(np.asarray(real.y), minlength=real.num_classes)
    if gbuf.fingerprints_match(buf.fingerprint, mine, buf.class_counts, counts):
        return
    sel = buf.manifest["selection"]
    ours = {k: config_selection.get(k) for k in ("indicator", "ratio", "utility_path", "stratum")}
    raise gbuf.BufferError(
        f"the expert buffer at {buffer_dir} was trained on other real samples than this "
        f"distillation uses (paper: drop the SAME samples for experts and distillation). "
        f"Buffer: selection {sel['indicator']} ratio {sel['ratio']} "
        f"utility_path {sel['utility_path']!r}, {sel['num_kept']} samples "
        f"(ids sha256 {sel['indices_sha256'][:12]}...); distillation: {ours}, "
        f"{real.num_real} samples. Train a buffer with the same seed and selection.* "
        f"(python launch/buffer.py --config=configs/buffer.py:{buf.manifest['dataset']} "
        f"--config.selection.indicator=... --workdir=...) or set "
        f"--config.allow_buffer_mismatch=True")


def load_experts(s: MTTSettings, config: Any, real: common.RealData,
                 num_params: int) -> tuple[jax.Array, dict]:
    """The checked expert buffer of ``s.buffer_dir`` (host side, once per run).

    Keeps the epochs ``0 .. max_start_epoch + expert_epochs - 1``; ``config`` gives the
    dataset, ZCA, model and subset the buffer must match.

    Returns:
      (experts ``[E, snapshots, P]`` in the stored dtype, the buffer's manifest).

    Raises:
      gold.distill.buffer.BufferError: no ``buffer_dir``, a missing / partial /
        incompatible buffer, too few stored epochs, another selection.
    """
    name = str(config.algorithm).upper()
    if not s.buffer_dir:
        raise gbuf.BufferError(f"{name} needs an expert buffer: set --config.buffer_dir=DIR, trained with\n  "
                               + gbuf.resume_command("DIR", config.data.name))
    v = s.resolved
    manifest = gbuf.read_manifest(s.buffer_dir, config.data.name)
    snapshots = v["max_start_epoch"] + v["expert_epochs"]
    gbuf.check_compatible(
        manifest, buffer_dir=s.buffer_dir, dataset=gdata.get_info(config.data.name).name,
        zca=bool(config.data.get("zca", False)),
        model={"name": str(config.model.name),
               "overrides": dict(sorted(config_utils.model_overrides(config.model).items()))},
        num_params=num_params, snapshots_needed=snapshots,
        train_per_class=int(config.data.get("train_per_class", 0) or 0))
    buf = gbuf.load_buffer(s.buffer_dir, num_snapshots=snapshots, max_experts=s.max_experts,
                           dataset=manifest["dataset"])
    if not s.allow_buffer_mismatch:
        check_selection(buf, real, s.buffer_dir, config.selection)
    return jnp.asarray(buf.params), manifest


def expert_order_state(key: jax.Array) -> dict:
    """``DistillState.extra`` entry of the shuffled expert cycle (raw key data)."""
    return {"expert_order": jax.random.key_data(key)}


def expert_segment(s: MTTSettings, experts: jax.Array, state: common.DistillState,
                   key_expert: jax.Array, key_start: jax.Array,
                   ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """This iteration's expert ``e`` (``s.expert_order``; ``key_expert`` draws it when
    random) and start epoch ``start ~ U{0, .., max_start_epoch - 1}`` (``key_start``).

    Returns:
      (``theta_start [P]`` = epoch ``start``, ``theta_target [P]`` = epoch
      ``start + expert_epochs``, both float32; ``e``, ``start`` int32 scalars).
    """
    v = s.resolved
    num_experts = experts.shape[0]
    if s.expert_order == "cycle":
        order_key = jax.random.wrap_key_data(state.extra["expert_order"])
        e = expert_at(order_key, state.iteration, num_experts)
    else:
        e = jax.random.randint(key_expert, (), 0, num_experts)
    start = jax.random.randint(key_start, (), 0, v["max_start_epoch"])
    theta_start = experts[e, start].astype(jnp.float32)
    theta_target = experts[e, start + v["expert_epochs"]].astype(jnp.float32)
    return theta_start, theta_target, e, start


def buffer_facts(manifest: dict, num_params: int, num_experts: int, config: Any) -> dict:
    """The run's logged facts about the student and its experts."""
    return {"num_params": num_params, "num_experts": num_experts,
            "buffer_epochs": int(manifest["epochs"]), "buffer_selection": manifest["selection"],
            "zca": bool(config.data.get("zca", False))}


def segment_metrics(e: jax.Array, start: jax.Array) -> dict:
    """The float32 ``expert`` / ``start_epoch`` metrics of a step."""
    return {"start_epoch": start.astype(jnp.float32), "expert": e.astype(jnp.float32)}


@registry.register("mtt", MTTSettings, needs_buffer=True)
def make(s: MTTSettings, config: Any, real: common.RealData) -> common.Algorithm:
    """MTT on the selected real data ``real`` (``configs/mtt.py``).

    Raises:
      gold.distill.buffer.BufferError: missing / partial / incompatible buffer (the
        message says how to train or resume it), too few stored epochs, another
        selection.
      ValueError: bad settings, a model with BatchNorm, a batch larger than the set.
    """
    v = s.resolved
    k = real.num_classes
    shape = real.image_shape
    m = k * s.ipc
    batch_syn = v["batch_syn"] or m
    if batch_syn > m:
        raise ValueError(f"batch_syn={batch_syn} exceeds the synthetic set ({m} images)")
    model = config_utils.build_model(config.model, k, shape)
    apply, num_params = flat_apply_fn(model, shape)

    experts, manifest = load_experts(s, config, real, num_params)  # [E, snapshots, P]
    num_experts = int(experts.shape[0])

    # --- synthetic set and optimisers ----------------------------------------------
    spec = common.SyntheticSpec(common.Pixels(k, s.ipc, shape), k, learn_labels=s.learn_labels,
                                label_scale=s.label_logit_scale, softmax_labels=True,
                                lr_init=v["syn_lr_init"])
    tx = spec.optimizer(images=common.sgd(v["lr_img"], s.momentum_img),
                        labels=common.sgd(s.lr_labels, s.momentum_img) if s.learn_labels else None,
                        lr=common.sgd(v["lr_lr"], s.momentum_lr))

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        k_img, k_order = jax.random.split(key)
        return common.DistillState.start(spec.init(k_img, real_, s.init), tx, expert_order_state(k_order))

    def outer_loss(params, theta_start, theta_target, idx, aug_keys):
        """(matching loss of the student's end, mean inner cross-entropy)."""
        syn = spec.decode(params)
        end, inner = student_end(apply, syn.x, syn.y, syn.lr, theta_start, idx, aug_keys,
                                 dsa_strategy=s.dsa_strategy, remat=s.remat)
        return matching_loss(end, theta_start, theta_target), jnp.mean(inner)

    grad_fn = jax.value_and_grad(outer_loss, has_aux=True)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        del real_  # MTT reads the real data only through the experts
        k_e, k_s, k_idx, k_aug = jax.random.split(key, 4)
        theta_start, theta_target, e, start = expert_segment(s, experts, state, k_e, k_s)
        idx = minibatch_indices(k_idx, m, batch_syn, v["syn_steps"])
        aug_keys = jax.random.split(k_aug, v["syn_steps"])
        (loss, inner_ce), grads = grad_fn(state.params, theta_start, theta_target, idx, aug_keys)
        params, opt_state = common.apply_update(tx, state.params, state.opt_state, grads)
        new_state = state.replace(params=params, opt_state=opt_state)
        metrics = {"loss": loss, "syn_lr": spec.lr_of(params), "inner_ce": inner_ce,
                   **segment_metrics(e, start)}
        return new_state, metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return spec.decode(state.params)

    settings = {**dataclasses.asdict(s), **v, "batch_syn": batch_syn, "algorithm": "mtt",
                **buffer_facts(manifest, num_params, num_experts, config)}
    return common.Algorithm("mtt", init, step, synthetic, settings)


__all__ = ["EXPERT_ORDERS", "MTTSettings", "PER_IPC_FIELDS", "buffer_facts", "check_selection",
           "expert_at", "expert_order_state", "expert_segment", "load_experts", "make", "matching_loss",
           "minibatch_indices", "segment_metrics", "student_end", "student_unroll"]
