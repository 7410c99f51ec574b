"""MTT: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Reference GeorgeCazenavette/mtt-distillation ``distill.py``. One ``step`` = one
reference iteration:

1. draw an expert ``e`` uniformly from the buffer and a start epoch
   ``s ~ U{0, ..., max_start_epoch - 1}`` (ref ``np.random.randint(0, max_start_epoch)``);
   ``theta_start = params[e, s]``, ``theta_target = params[e, s + expert_epochs]``;
2. unroll ``syn_steps`` SGD steps of a student that starts at ``theta_start``
   (functional model on flat parameters, no momentum, lr = the learnable synthetic lr)
   on minibatches of ``batch_syn`` synthetic images (a fresh permutation of the set
   whenever it is used up; default batch = the whole set), each minibatch with DSA
   (per-sample parameters, as the ref's ``DiffAugment(..., param)``), mean
   cross-entropy; ``gold.distill.unroll.unroll`` (``lax.scan``, ``jax.checkpoint``
   per step when ``remat``: memory nearly flat in ``syn_steps``);
3. loss ``||theta_end - theta_target||^2 / ||theta_start - theta_target||^2``;
4. SGD (momentum 0.5) on the images with ``lr_img`` and on the synthetic lr with
   ``lr_lr``. The lr is learned raw (not through a softplus), initialised at
   ``syn_lr_init`` (the ref's ``--lr_teacher`` of ``distill.py``).

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
from gold.distill.unroll import flat_apply_fn, unroll


@dataclasses.dataclass(frozen=True)
class MTTSettings:
    """Resolved, static hyper-parameters of an MTT run (see ``configs/mtt.py``)."""

    ipc: int
    iterations: int
    syn_steps: int
    expert_epochs: int
    max_start_epoch: int
    batch_syn: int
    lr_img: float
    momentum_img: float
    lr_lr: float
    momentum_lr: float
    syn_lr_init: float
    init: str
    dsa_strategy: str
    remat: bool
    buffer_dir: str
    max_experts: int
    allow_buffer_mismatch: bool


PER_IPC_FIELDS: tuple[str, ...] = (
    "syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr", "syn_lr_init", "batch_syn")


def resolve_per_ipc(config: Any) -> dict:
    """The per-IPC fields of ``config``: explicit (non-zero) values win, zeros come from
    ``config.per_ipc`` (rows ``(ipc, syn_steps, expert_epochs, max_start_epoch, lr_img,
    lr_lr, syn_lr_init, batch_syn)``) at the listed IPC nearest to ``config.ipc``."""
    ipc = int(config.ipc)
    rows = [tuple(r) for r in (config.get("per_ipc") or ())]
    row = min(rows, key=lambda r: (abs(int(r[0]) - ipc), int(r[0]))) if rows else None
    out = {}
    for j, name in enumerate(PER_IPC_FIELDS):
        value = config.get(name, 0) or 0
        if not value and row is not None:
            value = row[j + 1]
        out[name] = value
    missing = [n for n in PER_IPC_FIELDS[:-1] if not out[n]]
    if missing:
        raise ValueError(f"MTT settings {missing} are unset and config.per_ipc has no row for them")
    return out


def settings_from_config(config: Any, real: common.RealData) -> MTTSettings:
    """Validate ``config`` and resolve the static settings.

    Raises:
      ValueError: non-positive steps / epochs, unknown init or DSA strategy, a batch
        larger than the synthetic set.
      gold.distill.buffer.BufferError: no ``buffer_dir``.
    """
    ipc = common.config_ipc(config)
    v = resolve_per_ipc(config)
    m = real.num_classes * ipc
    batch_syn = int(v["batch_syn"]) or m
    checks = {k: int(v[k]) for k in ("syn_steps", "expert_epochs", "max_start_epoch")}
    bad = [f"{k}={x}" for k, x in checks.items() if x < 1]
    if bad or batch_syn < 1:
        raise ValueError(f"MTT needs positive values, got {', '.join(bad) or f'batch_syn={batch_syn}'}")
    if batch_syn > m:
        raise ValueError(f"batch_syn={batch_syn} exceeds the synthetic set ({m} images)")
    if config.init not in common.INIT_MODES:
        raise ValueError(f"unknown init {config.init!r}; valid: {common.INIT_MODES}")
    strategy = str(config.get("dsa_strategy", gaug.DEFAULT_STRATEGY))
    gaug.parse_strategy(strategy)
    if not config.get("buffer_dir"):
        raise gbuf.BufferError(
            "MTT needs an expert buffer: set --config.buffer_dir=DIR, trained with\n  "
            + gbuf.resume_command("DIR", config.data.name))
    return MTTSettings(
        ipc=ipc, iterations=int(config.iterations), syn_steps=checks["syn_steps"],
        expert_epochs=checks["expert_epochs"], max_start_epoch=checks["max_start_epoch"],
        batch_syn=batch_syn, lr_img=float(v["lr_img"]),
        momentum_img=float(config.get("momentum_img", 0.5)), lr_lr=float(v["lr_lr"]),
        momentum_lr=float(config.get("momentum_lr", 0.5)), syn_lr_init=float(v["syn_lr_init"]),
        init=str(config.init), dsa_strategy=strategy, remat=bool(config.get("remat", True)),
        buffer_dir=str(config.buffer_dir), max_experts=int(config.get("max_experts", 0) or 0),
        allow_buffer_mismatch=bool(config.get("allow_buffer_mismatch", False)))


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


def matching_loss(theta_end: jax.Array, theta_start: jax.Array, theta_target: jax.Array) -> jax.Array:
    """``||theta_end - theta_target||^2 / ||theta_start - theta_target||^2`` (flat ``[P]``).

    The ref divides both sums by the number of parameters, which cancels.
    """
    num = jnp.sum(jnp.square(theta_end - theta_target))
    den = jnp.sum(jnp.square(theta_start - theta_target))
    return num / den


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
    """The student's parameters after ``T`` SGD steps on the synthetic set.

    Args:
      apply: ``(flat_params [P], x [B, H, W, C], train) -> logits`` (``flat_apply_fn``).
      x_syn, y_syn: synthetic images ``[M, H, W, C]`` and int labels ``[M]``.
      lr: the (learnable) synthetic lr, float32 scalar.
      theta_start: ``[P]`` starting parameters (an expert's epoch ``s``).
      idx: int32 ``[T, B]`` minibatch indices (:func:`minibatch_indices`).
      aug_keys: ``[T]`` PRNG keys, one DSA draw (per-sample parameters) per step.
      dsa_strategy: DSA op-groups ('none' = no augmentation).
      remat: ``jax.checkpoint`` each step.

    Returns:
      (``theta_end [P]``, float32 ``[T]`` cross-entropy of each step).
    """
    use_dsa = bool(gaug.parse_strategy(dsa_strategy))

    def step_loss(theta, batch):
        b_idx, b_key = batch
        xb = x_syn[b_idx]
        if use_dsa:
            xb = gaug.dsa(b_key, xb, dsa_strategy, siamese=False)
        return jnp.mean(gnn.per_sample_cross_entropy(apply(theta, xb, True), y_syn[b_idx]))

    res = unroll(step_loss, theta_start, lr, (idx, aug_keys), remat=remat)
    return res.params, res.losses


def trajectory_loss(
    apply: Callable[[jax.Array, jax.Array, bool], jax.Array],
    x_syn: jax.Array,
    y_syn: jax.Array,
    lr: jax.Array,
    theta_start: jax.Array,
    theta_target: jax.Array,
    idx: jax.Array,
    aug_keys: jax.Array,
    *,
    dsa_strategy: str = gaug.DEFAULT_STRATEGY,
    remat: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """MTT loss of one expert segment: (:func:`matching_loss` of the student's end,
    mean inner cross-entropy). Differentiable w.r.t. ``x_syn`` and ``lr``; arguments as
    in :func:`student_end`, ``theta_target [P]`` the expert's epoch ``s + expert_epochs``."""
    end, losses = student_end(apply, x_syn, y_syn, lr, theta_start, idx, aug_keys,
                              dsa_strategy=dsa_strategy, remat=remat)
    return matching_loss(end, theta_start, theta_target), jnp.mean(losses)


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


def make(config: Any, real: common.RealData) -> common.Algorithm:
    """Build MTT for ``config`` (``configs/mtt.py``) on the selected real data ``real``.

    Raises:
      gold.distill.buffer.BufferError: missing / partial / incompatible buffer (the
        message says how to train or resume it), too few stored epochs, another
        selection.
      ValueError: bad settings, a model with BatchNorm.
    """
    s = settings_from_config(config, real)
    k = real.num_classes
    shape = real.image_shape
    model = config_utils.build_model(config.model, k, shape)
    apply, num_params = flat_apply_fn(model, shape)

    # --- the expert buffer ----------------------------------------------------------
    manifest = gbuf.read_manifest(s.buffer_dir, config.data.name)
    snapshots = s.max_start_epoch + s.expert_epochs
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
    experts = jnp.asarray(buf.params)  # [K_experts, snapshots, P], stored dtype
    num_experts = int(experts.shape[0])

    # --- synthetic set and optimisers ----------------------------------------------
    pixels = common.Pixels(k, s.ipc, shape)
    labels = pixels.labels()
    m = k * s.ipc
    tx_img = gnn.sgd(s.lr_img, s.momentum_img, 0.0)
    tx_lr = gnn.sgd(s.lr_lr, s.momentum_lr, 0.0)

    def init(key: jax.Array, real_: common.RealData) -> common.DistillState:
        params = pixels.init(key, real_, s.init)
        lr = jnp.float32(s.syn_lr_init)
        return common.DistillState.start(params, tx_img, {"lr": lr, "lr_opt": tx_lr.init(lr)})

    def outer_loss(params, lr, theta_start, theta_target, idx, aug_keys):
        return trajectory_loss(apply, pixels.decode(params), labels, lr, theta_start, theta_target,
                               idx, aug_keys, dsa_strategy=s.dsa_strategy, remat=s.remat)

    grad_fn = jax.value_and_grad(outer_loss, argnums=(0, 1), has_aux=True)

    def step(state: common.DistillState, key: jax.Array, real_: common.RealData):
        del real_  # MTT reads the real data only through the experts
        k_e, k_s, k_idx, k_aug = jax.random.split(key, 4)
        e = jax.random.randint(k_e, (), 0, num_experts)
        start = jax.random.randint(k_s, (), 0, s.max_start_epoch)
        theta_start = experts[e, start].astype(jnp.float32)
        theta_target = experts[e, start + s.expert_epochs].astype(jnp.float32)
        idx = minibatch_indices(k_idx, m, s.batch_syn, s.syn_steps)
        aug_keys = jax.random.split(k_aug, s.syn_steps)
        lr = state.extra["lr"]
        (loss, inner_ce), (g_params, g_lr) = grad_fn(state.params, lr, theta_start, theta_target,
                                                     idx, aug_keys)
        params, opt_state = common.apply_image_update(tx_img, state.params, state.opt_state, g_params)
        lr_upd, lr_opt = tx_lr.update(g_lr, state.extra["lr_opt"], lr)
        new_lr = lr + lr_upd
        new_state = state.replace(params=params, opt_state=opt_state, iteration=state.iteration + 1,
                                  extra={"lr": new_lr, "lr_opt": lr_opt})
        metrics = {"loss": loss, "syn_lr": new_lr, "inner_ce": inner_ce,
                   "start_epoch": start.astype(jnp.float32), "expert": e.astype(jnp.float32)}
        return new_state, metrics

    def synthetic(state: common.DistillState) -> common.Synthetic:
        return common.Synthetic(pixels.decode(state.params), labels, state.extra["lr"])

    settings = {**dataclasses.asdict(s), "algorithm": "mtt", "num_params": num_params,
                "num_experts": num_experts, "buffer_epochs": int(manifest["epochs"]),
                "buffer_selection": manifest["selection"], "zca": bool(config.data.get("zca", False))}
    return common.Algorithm("mtt", init, step, synthetic, settings)


__all__ = ["MTTSettings", "PER_IPC_FIELDS", "check_selection", "make", "matching_loss",
           "minibatch_indices", "resolve_per_ipc", "settings_from_config", "student_end",
           "trajectory_loss"]
