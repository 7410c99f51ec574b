"""Evaluation protocol of a synthetic set (DC / DSA / DM / MTT references, and the
named evaluations of other methods: :data:`PRESETS`).

Train K freshly initialised networks on the synthetic set, all K in one program
(vmapped on accelerators, one after another on CPU: :func:`networks_in_sequence`), then
measure final-epoch top-1 accuracy on the test set with one batched test pass over all
K networks. Any registered architecture can be evaluated
(cross-architecture generalisation).

On several devices the K networks are split along the ``model`` axis of a
``gold.parallel`` mesh (``jax.shard_map``): each device trains and tests its K/n
networks (K is padded to a multiple of n with extra networks whose results are
dropped). Network k always uses ``split(key, K)[k]``, so the layout changes no random
draw; on one device the plain vmapped program runs, unchanged.

:func:`evaluate_streamed` trains the same K networks (:func:`train_networks`, the same
keys and layout) and tests them on a held-out split that stays on disk: fixed-size
batches streamed from a ``gold.data.stream`` source, correct predictions counted per
batch, so memory holds one test batch whatever the split's size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Iterable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from gold import augment as gaug
from gold import data as gdata
from gold import models as gmodels
from gold import nn as gnn
from gold import parallel
from gold.data import stream as gstream


OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
"""Valid ``EvalProtocol.optimizer`` values."""
LOSSES: tuple[str, ...] = ("ce", "mse")
"""Valid ``EvalProtocol.loss`` values."""
SCHEDULES: tuple[str, ...] = ("reference", "multistep", "cosine", "constant")
"""Valid ``EvalProtocol.schedule`` values."""
_STEP_SCHEDULES = ("reference", "multistep")


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How to train and test the K evaluation networks.

    The default is the DC / DSA / DM / MTT references' ``evaluate_synset``
    (``schedule='reference'``): with ``Epoch = epochs`` they train ``Epoch + 1`` epochs
    (``for ep in range(Epoch + 1)``) and, after the epoch with index ``Epoch // 2 + 1``,
    multiply the lr by 0.1 AND build a new SGD optimiser (momentum buffer reset). So
    ``epochs=300`` trains 301 epochs, 152 at ``lr`` then 149 at ``lr / 10`` from zero
    momentum. Each epoch is the references' ``DataLoader(shuffle=True)`` pass: the last
    minibatch is smaller, not padded (:func:`gold.nn.train_epoch`), so BatchNorm
    statistics never see repeated samples. Other methods' evaluations are named
    :data:`PRESETS` (:meth:`preset`).

    Attributes:
      model: architecture name (see ``gold.models.model_names()``).
      model_overrides: constructor overrides, e.g. ``(("width", 32),)``.
      num_models: K, networks trained from different random inits.
      epochs: training epochs; ``schedule='reference'`` trains ``epochs + 1`` (the
        references' ``epoch_eval_train``, 300; 1000 with augmentation), every other
        schedule exactly ``epochs`` (:meth:`train_epochs`).
      batch_size: minibatch size (256); larger than the set = full-batch epochs.
      lr, momentum, weight_decay: base learning rate (0.01), SGD momentum (0.9; SGD
        only), L2 weight decay added to the gradient (5e-4; PyTorch ``weight_decay``
        semantics for SGD and Adam; 0 = none).
      optimizer: ``sgd`` (PyTorch SGD) | ``adam`` (Adam, betas 0.9 / 0.999; FRePo).
      loss: ``ce`` (soft-label cross-entropy) | ``mse`` (``0.5 * sum_k (out - t)**2``
        per sample on regression targets: int labels become centred one-hot
        ``one_hot - 1/K``, float labels are used as given; KIP / FRePo). Accuracy is the
        argmax of the outputs either way.
      schedule: ``reference`` (step decay at :attr:`lr_decay_epochs`) | ``multistep``
        (lr x ``lr_decay`` after each ``floor(f * epochs)`` epochs, ``f`` in
        :attr:`lr_decay_fractions`; PyTorch ``MultiStepLR``; IDC) | ``cosine`` (linear
        warm-up from 0 over :attr:`warmup_epochs`, then cosine decay to
        ``lr * final_lr_fraction``; FRePo) | ``constant`` (LinBa). Schedules change the
        lr per step (minibatch).
      lr_decay_epochs: ``reference`` only: epochs completed before each lr drop
        (default ``(epochs // 2 + 2,)``, the references' drop after epoch index
        ``epochs//2 + 1``).
      lr_decay: factor of each drop of ``reference`` / ``multistep`` (0.1; IDC 0.2).
      momentum_reset: each drop starts a fresh optimiser (zero momentum / Adam moments);
        ``None`` = the schedule's own: True for ``reference`` (as the references do),
        False for ``multistep``; True needs a step schedule.
      lr_decay_fractions: ``multistep`` only: fractions of ``epochs`` in (0, 1),
        ascending (IDC ``(2/3, 5/6)``).
      warmup_epochs: ``cosine`` only: epochs of linear warm-up (counted in steps:
        ``warmup_epochs * steps_per_epoch``).
      final_lr_fraction: ``cosine`` only: the lr at the end as a fraction of ``lr``
        (FRePo 0.01; 0 = decay to zero).
      augment: ``none`` | ``dsa`` | ``dc_mnist`` (crop/scale/rotate, per sample) | ``dc_bn``.
      dsa_strategy: DSA op groups when ``augment == 'dsa'``.
      cutmix: probability that a minibatch gets CutMix after the augmentation (0 = off;
        IDC 0.5); labels become soft (mixed by box area).
      cutmix_beta: CutMix box ``lam ~ Beta(beta, beta)`` (1.0).
      test_batch_size: batch of the test pass (50: on a 2-core CPU the 10k MNIST test
        images of a ConvNetD3 w128 took 7.4 s at 50, 9.5 s at 100, 12 s at 1000; the
        activations of a small batch stay in cache). Accuracy does not depend on it.

    Raises:
      ValueError: an unknown name, a value out of range, or a field that its schedule
        does not read (e.g. ``warmup_epochs`` without ``schedule='cosine'``).
    """

    model: str = "convnet"
    model_overrides: tuple[tuple[str, object], ...] = ()
    num_models: int = 5
    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_epochs: Optional[tuple[int, ...]] = None
    lr_decay: float = 0.1
    momentum_reset: Optional[bool] = None
    augment: str = "none"
    dsa_strategy: str = gaug.DEFAULT_STRATEGY
    test_batch_size: int = 50
    optimizer: str = "sgd"
    loss: str = "ce"
    schedule: str = "reference"
    lr_decay_fractions: tuple[float, ...] = ()
    warmup_epochs: int = 0
    final_lr_fraction: float = 0.0
    cutmix: float = 0.0
    cutmix_beta: float = 1.0

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"EvalProtocol: {message}")

        for field, valid in (("optimizer", OPTIMIZERS), ("loss", LOSSES), ("schedule", SCHEDULES),
                             ("augment", ("", "None", *gaug.AUGMENT_NAMES))):
            check(getattr(self, field) in valid,
                  f"unknown {field} {getattr(self, field)!r}; valid: {', '.join(v for v in valid if v)}")
        check(self.num_models >= 1, f"num_models must be >= 1, got {self.num_models}")
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1 and self.test_batch_size >= 1,
              f"batch sizes must be >= 1, got {self.batch_size} / {self.test_batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.lr_decay > 0, f"lr_decay must be > 0, got {self.lr_decay}")
        check(self.lr_decay_epochs is None or self.schedule == "reference",
              f"lr_decay_epochs is read by schedule='reference' only (schedule={self.schedule!r}); "
              f"multistep takes lr_decay_fractions")
        fractions = tuple(self.lr_decay_fractions)
        if self.schedule == "multistep":
            check(len(fractions) > 0, "schedule='multistep' needs lr_decay_fractions, e.g. (2/3, 5/6)")
            check(all(0 < f < 1 for f in fractions), f"lr_decay_fractions must be in (0, 1), got {fractions}")
            check(list(fractions) == sorted(fractions), f"lr_decay_fractions must be ascending, got {fractions}")
        else:
            check(not fractions, f"lr_decay_fractions is read by schedule='multistep' only "
                                 f"(schedule={self.schedule!r})")
        check(self.momentum_reset is not True or self.schedule in _STEP_SCHEDULES,
              f"momentum_reset=True needs lr drops (schedule 'reference' or 'multistep'), not "
              f"{self.schedule!r}; set momentum_reset=False or None")
        check(self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        check(self.warmup_epochs == 0 or self.schedule == "cosine",
              f"warmup_epochs is read by schedule='cosine' only (schedule={self.schedule!r})")
        check(self.warmup_epochs <= self.epochs,
              f"warmup_epochs={self.warmup_epochs} exceeds epochs={self.epochs}")
        check(0 <= self.final_lr_fraction < 1, f"final_lr_fraction must be in [0, 1), got {self.final_lr_fraction}")
        check(self.final_lr_fraction == 0 or self.schedule == "cosine",
              f"final_lr_fraction is read by schedule='cosine' only (schedule={self.schedule!r})")
        check(0 <= self.cutmix <= 1, f"cutmix is a probability in [0, 1], got {self.cutmix}")
        check(self.cutmix_beta > 0, f"cutmix_beta must be > 0, got {self.cutmix_beta}")

    def train_epochs(self) -> int:
        """Epochs actually trained: ``epochs + 1`` for ``schedule='reference'`` (the
        references' ``range(Epoch + 1)``), else ``epochs``."""
        return self.epochs + 1 if self.schedule == "reference" else self.epochs

    def decay_epochs(self) -> tuple[int, ...]:
        """Epochs completed before each lr drop of a step schedule (``reference``: default
        ``epochs // 2 + 2``; ``multistep``: ``floor(f * epochs)``, repeats kept); ``()``
        for ``cosine`` / ``constant``."""
        if self.schedule == "multistep":
            return tuple(int(math.floor(f * self.epochs + 1e-9)) for f in self.lr_decay_fractions)
        if self.schedule != "reference":
            return ()
        if self.lr_decay_epochs is not None:
            return self.lr_decay_epochs
        return (self.epochs // 2 + 2,)

    def resets_momentum(self) -> bool:
        """Whether each lr drop starts a fresh optimiser (:attr:`momentum_reset` resolved)."""
        if self.momentum_reset is None:
            return self.schedule == "reference"
        return self.momentum_reset

    def to_dict(self) -> dict:
        """JSON-friendly description, stored with every synthetic set (defaults resolved:
        ``lr_decay_epochs`` of ``reference``, ``momentum_reset``)."""
        d = dataclasses.asdict(self)
        d["model_overrides"] = dict(self.model_overrides)
        d["lr_decay_epochs"] = list(self.decay_epochs()) if self.schedule == "reference" else None
        d["momentum_reset"] = self.resets_momentum()
        d["lr_decay_fractions"] = list(self.lr_decay_fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EvalProtocol":
        """Inverse of :meth:`to_dict`; a dict written before a field existed gets its
        default (the reference protocol).

        Raises:
          ValueError: unknown keys or invalid values.
        """
        d = dict(d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown evaluation protocol fields {unknown}")
        d["model_overrides"] = tuple(sorted(dict(d.get("model_overrides", {})).items()))
        for name in ("lr_decay_epochs", "lr_decay_fractions"):
            if d.get(name) is not None:
                d[name] = tuple(d[name])
        return cls(**d)

    @classmethod
    def preset(cls, name: str, dataset: str = "", ipc: int = 0, **overrides) -> "EvalProtocol":
        """The protocol of a named method's evaluation (:data:`PRESETS`), with ``overrides``
        (any field) on top. See :func:`preset_fields`."""
        return cls(**{**preset_fields(name, dataset, ipc), **overrides})


class Preset(NamedTuple):
    """A named evaluation: where it comes from and its fields for (dataset, ipc)."""

    source: str
    fields: Callable[[str, int], dict]


def _idc_fields(dataset: str, ipc: int) -> dict:
    from gold.config_utils import dsa_strategy  # imports this module

    # IDC's DSA: the dataset's strategy (no flip on digits) without 'cutout' under CutMix
    groups = (dsa_strategy(dataset) if dataset else gaug.DEFAULT_STRATEGY).split("_")
    strategy = "_".join(g for g in groups if g != "cutout")
    return dict(epochs=1000, batch_size=64, lr=0.01, momentum=0.9, weight_decay=5e-4,
                schedule="multistep", lr_decay=0.2, lr_decay_fractions=(2 / 3, 5 / 6),
                momentum_reset=False, augment="dsa", dsa_strategy=strategy, cutmix=0.5, cutmix_beta=1.0)


# FRePo's eval.py: training steps by number of synthetic images (``step_per_prototpyes``).
FREPO_STEPS: dict[int, int] = {10: 1000, 100: 2000, 200: 20000, 400: 5000, 500: 5000, 1000: 10000,
                               2000: 40000, 5000: 40000}
_FREPO_BATCH, _FREPO_WARMUP_STEPS = 500, 500


def _frepo_fields(dataset: str, ipc: int) -> dict:
    n = ipc * gdata.get_info(dataset).num_classes if dataset and ipc > 0 else 0
    if n not in FREPO_STEPS:
        raise ValueError(f"the frepo evaluation preset needs a dataset and ipc whose number of synthetic "
                         f"images is one of FRePo's {sorted(FREPO_STEPS)} (got dataset={dataset!r}, "
                         f"ipc={ipc}); or pass epochs and warmup_epochs explicitly")
    steps_per_epoch = -(-n // _FREPO_BATCH)
    return dict(optimizer="adam", lr=3e-4, weight_decay=0.0, loss="mse", batch_size=_FREPO_BATCH,
                epochs=FREPO_STEPS[n] // steps_per_epoch, schedule="cosine", momentum_reset=False,
                warmup_epochs=_FREPO_WARMUP_STEPS // steps_per_epoch, final_lr_fraction=0.01,
                augment="dsa")


PRESETS: dict[str, Preset] = {
    "dc": Preset("DC / DSA / DM / MTT evaluate_synset (VICO-UoE/DatasetCondensation utils.py): "
                 "SGD 0.01, momentum 0.9, wd 5e-4, batch 256, 300 (+1) epochs, x0.1 and a fresh "
                 "optimiser after epoch index epochs//2 + 1",
                 lambda dataset, ipc: {}),
    "frepo": Preset("FRePo script/eval.py + lib/training/utils.py (yongchaoz/FRePo): Adam 3e-4 (no "
                    "weight decay: optax.adam), MSE 0.5*sum on centred one-hot labels, batch min(n, 500), "
                    "steps by number of images (FREPO_STEPS), 500 warm-up steps then cosine to 1%, "
                    "DSA-style augmentation",
                    _frepo_fields),
    "idc": Preset("IDC train.py / argument.py (snu-mllab/Efficient-Dataset-Condensation): SGD 0.01, "
                  "momentum 0.9, wd 5e-4, batch 64, 1000 epochs, MultiStepLR x0.2 at 2/3 and 5/6, DSA "
                  "(no cutout; no flip on digits) + CutMix p 0.5, beta 1",
                  _idc_fields),
    "linba": Preset("LinBa configs/compressors_bptt_interventions.yml (princetonvisualai/"
                    "RememberThePast-DatasetDistillation): SGD 0.01, momentum 0.9, no weight decay, "
                    "no scheduler, 300 epochs, batch 640",
                    lambda dataset, ipc: dict(epochs=300, batch_size=640, weight_decay=0.0,
                                              schedule="constant", momentum_reset=False)),
    "cafe": Preset("CAFE (kaiwang960112/CAFE): the DC evaluation for 600 epochs",
                   lambda dataset, ipc: dict(epochs=600)),
    "cafe_dsa": Preset("CAFE+DSA (kaiwang960112/CAFE): the DC evaluation with DSA for 1000 epochs",
                       lambda dataset, ipc: dict(epochs=1000, augment="dsa")),
}
"""Named method evaluations: ``name -> Preset(source, fields(dataset, ipc))``."""


def preset_fields(name: str, dataset: str = "", ipc: int = 0) -> dict:
    """The :class:`EvalProtocol` fields of preset ``name`` for ``dataset`` / ``ipc``: the
    protocol defaults updated with the preset's values (model fields excluded).

    Raises:
      ValueError: an unknown preset, or ``frepo`` without a dataset / ipc it knows.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown evaluation preset {name!r}; valid: {', '.join(PRESETS)}")
    fields = {f.name: f.default for f in dataclasses.fields(EvalProtocol)
              if f.name not in ("model", "model_overrides")}
    fields.update(PRESETS[name].fields(dataset, ipc))
    if fields["momentum_reset"] is None:
        fields["momentum_reset"] = fields["schedule"] == "reference"
    return fields


def training_phases(protocol: EvalProtocol, lr: jax.Array, steps_per_epoch: int) -> list[gnn.Phase]:
    """The optimiser phases of ``protocol`` for a base learning rate ``lr`` (may be traced).

    Step schedules with :meth:`EvalProtocol.resets_momentum` (the ``reference`` default):
    one phase per stretch between lr drops, the i-th at the constant
    ``lr * lr_decay**i``, each with a fresh optimiser. Otherwise one phase of
    ``train_epochs()`` epochs and one optimiser whose lr follows the schedule per step
    (``gold.nn.step_decay`` / ``gold.nn.warmup_cosine`` / constant).
    """
    total = protocol.train_epochs()

    def make(schedule) -> optax.GradientTransformation:
        return gnn.make_optimizer(protocol.optimizer, schedule, momentum=protocol.momentum,
                                  weight_decay=protocol.weight_decay)

    if protocol.schedule in _STEP_SCHEDULES:
        drops = [min(max(int(e), 0), total) for e in protocol.decay_epochs()]
        if protocol.resets_momentum():
            bounds = sorted(set(drops))
            factors = [protocol.lr_decay ** sum(d <= b for d in drops) for b in [0, *bounds]]
            edges = [0, *bounds, total]
            return [gnn.Phase(make(lambda step, f=f: lr * f), end - start)
                    for f, start, end in zip(factors, edges[:-1], edges[1:])]
        unit = gnn.step_decay(1.0, steps_per_epoch, tuple(drops), protocol.lr_decay)
    elif protocol.schedule == "cosine":
        unit = gnn.warmup_cosine(total * steps_per_epoch, protocol.warmup_epochs * steps_per_epoch,
                                 protocol.final_lr_fraction)
    else:  # constant
        return [gnn.Phase(make(lambda step: lr), total)]
    return [gnn.Phase(make(lambda step: lr * unit(step)), total)]


def training_targets(protocol: EvalProtocol, y: jax.Array, num_classes: int) -> jax.Array:
    """The labels the networks train on.

    ``loss='mse'``: int ``[M]`` labels become centred one-hot ``one_hot - 1/K`` (float
    ``[M, K]``), float labels are kept. ``loss='ce'``: labels are kept, except that int
    labels become one-hot floats when CutMix mixes them.
    """
    if y.ndim == 2:
        return y
    if protocol.loss == "mse":
        return jax.nn.one_hot(y, num_classes) - 1.0 / num_classes
    if protocol.cutmix > 0:
        return jax.nn.one_hot(y, num_classes)
    return y


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Test accuracies in percent of the K networks, their mean / std, wall seconds."""

    accuracies: np.ndarray
    mean: float
    std: float
    seconds: float


def eval_model(protocol: EvalProtocol, num_classes: int, shape: Sequence[int]) -> nn.Module:
    """The evaluation network of ``protocol`` for ``num_classes`` classes and samples of
    ``shape`` (``[H, W, C]`` images or ``[T, H, W, C]`` clips)."""
    return gmodels.get_model(protocol.model, num_classes, tuple(shape), **dict(protocol.model_overrides))


def train_networks(
    protocol: EvalProtocol,
    num_classes: int,
    keys: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    lr: jax.Array,
) -> tuple[nn.Module, gnn.Variables]:
    """Train ``len(keys)`` fresh networks on ``(x_syn, y_syn)`` in one program
    (``gold.nn.fit_phases_many`` through :func:`training_phases`; vmapped, or one after
    another where :func:`networks_in_sequence`); pure and jittable
    (``protocol`` and ``num_classes`` static).

    Args:
      protocol: evaluation protocol (model, epochs, optimiser, schedule, loss,
        augmentation, CutMix).
      num_classes: number of classes K of the logits.
      keys: ``[K]`` PRNG keys, one per network (init, shuffling, augmentation).
      x_syn: ``[M, H, W, C]`` training images; y_syn: ``[M]`` int labels or ``[M, K]``
        soft labels.
      lr: float32 scalar learning rate (a learned lr, or ``protocol.lr``).

    Returns:
      (the model, its variables with a leading axis K).
    """
    augmented = protocol.augment not in ("", "none", "None") or protocol.cutmix > 0
    if augmented and x_syn.ndim != 4:
        raise ValueError(f"evaluation augment={protocol.augment!r} cutmix={protocol.cutmix} transforms images "
                         f"[H, W, C], but the samples are {tuple(x_syn.shape[1:])}; set eval.augment=none and "
                         f"eval.cutmix=0 for clips")
    model = eval_model(protocol, num_classes, x_syn.shape[1:])
    steps_per_epoch = gnn.num_batches(x_syn.shape[0], protocol.batch_size)
    augment = gaug.get_augment(protocol.augment, strategy=protocol.dsa_strategy)
    mix = None
    if protocol.cutmix > 0:
        mix = functools.partial(gaug.cutmix, beta=float(protocol.cutmix_beta), prob=float(protocol.cutmix))
    phases = training_phases(protocol, lr, steps_per_epoch)
    targets = training_targets(protocol, y_syn, num_classes)
    loss = gnn.per_sample_squared_error if protocol.loss == "mse" else None

    def fit(keys_: jax.Array) -> gnn.Variables:
        return gnn.fit_phases_many(model, phases, keys_, x_syn, targets, batch_size=protocol.batch_size,
                                   augment=augment, loss=loss, mix=mix).variables

    if networks_in_sequence() and keys.shape[0] > 1:
        one = lambda key: jax.tree.map(lambda v: v[0], fit(key[None]))  # noqa: E731
        return model, jax.lax.map(one, keys)
    return model, fit(keys)


def networks_in_sequence() -> bool:
    """Whether :func:`train_networks` trains its K networks one after another inside its
    program (``lax.map``; CPU) rather than vmapped (accelerators). The networks, keys
    and results are the same either way (up to float rounding). Measured on an idle
    2-core AMD EPYC (ConvNetD3 w128, DC MNIST protocol, 10 images, 1000 epochs, 5
    networks, compile apart): 177.5 s one after another, 183.9 s vmapped. XLA:CPU turns
    the K vmapped convolutions into grouped convolutions that run no faster than K
    plain ones, and the folded first layer's per-sample matmul is batched further.
    """
    return jax.default_backend() == "cpu"


def train_and_test(
    protocol: EvalProtocol,
    num_classes: int,
    keys: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    lr: jax.Array,
) -> jax.Array:
    """:func:`train_networks`, then one batched test pass over all K networks:
    ``[K]`` accuracies in [0, 1] on ``x_test [N, H, W, C]``, int ``y_test [N]``."""
    model, variables = train_networks(protocol, num_classes, keys, x_syn, y_syn, lr)
    return gnn.accuracy_many(model, variables, x_test, y_test, protocol.test_batch_size)


@functools.lru_cache(maxsize=32)
def _compiled(protocol: EvalProtocol, num_classes: int):
    return jax.jit(functools.partial(train_and_test, protocol, num_classes))


@functools.lru_cache(maxsize=32)
def _compiled_sharded(protocol: EvalProtocol, num_classes: int, mesh: Mesh):
    """:func:`train_and_test` with the keys split along ``model``: each device trains
    and tests its own networks; the synthetic and test sets are replicated."""
    rep = PartitionSpec()
    fn = jax.shard_map(functools.partial(train_and_test, protocol, num_classes), mesh=mesh,
                       in_specs=(PartitionSpec("model"), rep, rep, rep, rep, rep),
                       out_specs=PartitionSpec("model"),
                       # gold's custom-VJP convolutions do not type varying manual axes; the
                       # body is per-network, so each device's output is its own shard
                       check_vma=False)
    return jax.jit(fn, out_shardings=parallel.replicated(mesh))  # every process reads all K


def evaluation_mesh(num_models: int, requested=None, devices=None) -> Mesh:
    """The mesh of a K-model evaluation: ``gold.parallel.make_mesh`` preferring the
    ``model`` axis, at most ``num_models`` model shards (``requested``: ``config.mesh``)."""
    return parallel.make_mesh(requested, devices=devices, prefer="model",
                              max_size={"model": max(1, int(num_models))})


def train_and_test_on(mesh: Optional[Mesh], protocol: EvalProtocol, num_classes: int, keys: jax.Array,
                      x_syn: jax.Array, y_syn: jax.Array, x_test: jax.Array, y_test: jax.Array,
                      lr: jax.Array) -> jax.Array:
    """:func:`train_and_test` (jitted) with the K networks split along ``mesh``'s
    ``model`` axis; ``None`` or a model axis of 1 runs the plain single-program path.

    Raises:
      ValueError: more model shards than networks.
    """
    k = int(keys.shape[0])
    args = (jnp.asarray(x_syn), jnp.asarray(y_syn), jnp.asarray(x_test),
            jnp.asarray(y_test, jnp.int32), jnp.float32(lr))
    if not _model_sharded(mesh):
        return _compiled(protocol, int(num_classes))(keys, *args)
    acc = _compiled_sharded(protocol, int(num_classes), mesh)(_sharded_keys(keys, mesh),
                                                               *parallel.replicate(args, mesh))
    return acc[:k]


def _model_sharded(mesh: Optional[Mesh]) -> bool:
    """Whether ``mesh`` splits the K networks (a ``model`` axis larger than 1)."""
    return mesh is not None and parallel.axis_size(mesh, "model") > 1


def _sharded_keys(keys: jax.Array, mesh: Mesh) -> jax.Array:
    """The K network keys padded to a multiple of the ``model`` shards (extra networks,
    copies of the first keys, fill the last shards; their results are dropped) and split
    along ``model``.

    Raises:
      ValueError: more model shards than networks.
    """
    k, shards = int(keys.shape[0]), parallel.axis_size(mesh, "model")
    if shards > k:
        raise ValueError(f"{shards} model shards but only {k} evaluation networks; "
                         f"lower mesh.model or raise eval.num_models")
    padded = parallel.padded_size(k, shards)
    if padded > k:
        keys = jnp.concatenate([keys, keys[: padded - k]])
    return parallel.shard_leading(keys, mesh, "model")


def evaluate_synthetic(
    key: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    protocol: EvalProtocol = EvalProtocol(),
    lr: Optional[float] = None,
    mesh: Optional[Mesh] = None,
) -> EvalResult:
    """Train ``protocol.num_models`` fresh networks on ``(x_syn, y_syn)`` and test them.

    Args:
      key: PRNG key; network k uses ``split(key, K)[k]``.
      x_syn: ``[M, H, W, C]`` synthetic images (same normalisation as ``x_test``).
      y_syn: int ``[M]`` labels or float ``[M, num_classes]`` soft labels.
      x_test, y_test: ``[N, H, W, C]`` test images and int ``[N]`` labels.
      lr: learning rate overriding ``protocol.lr`` (MTT's learned synthetic lr).
      mesh: a ``gold.parallel`` mesh whose ``model`` axis splits the K networks;
        default :func:`evaluation_mesh` over all devices (one device: unsharded).

    Returns:
      EvalResult with accuracies in percent.

    Raises:
      ValueError: mismatched shapes, negative soft labels with ``loss='ce'``, more model
        shards than networks.
    """
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"synthetic images {x_syn.shape[1:]} and test images {x_test.shape[1:]} differ in shape")
    check_synthetic(x_syn, y_syn, num_classes, protocol)
    start = time.time()
    if mesh is None:
        mesh = evaluation_mesh(protocol.num_models)
    keys = jax.random.split(key, protocol.num_models)
    lr_value = jnp.float32(protocol.lr if lr is None else lr)
    acc = train_and_test_on(mesh, protocol, int(num_classes), keys, x_syn, y_syn, x_test, y_test,
                            lr_value)
    return _result(acc, start)


def check_synthetic(x_syn: jax.Array, y_syn: jax.Array, num_classes: int, protocol: EvalProtocol) -> None:
    """ValueError unless ``x_syn [M, ...]`` and ``y_syn`` (int ``[M]`` or soft
    ``[M, num_classes]``) form a set that ``protocol`` can train on."""
    if x_syn.shape[0] != y_syn.shape[0]:
        raise ValueError(f"{x_syn.shape[0]} synthetic images but {y_syn.shape[0]} labels")
    if np.ndim(y_syn) == 2 and y_syn.shape[1] != num_classes:
        raise ValueError(f"soft labels have {y_syn.shape[1]} columns for {num_classes} classes")
    if protocol.loss == "ce" and np.ndim(y_syn) == 2 and float(np.min(np.asarray(y_syn))) < 0:
        raise ValueError(
            "the synthetic labels have negative entries (e.g. centred learned labels): "
            "loss='ce' (soft-label cross-entropy) has no minimum for them. Evaluate them as "
            "regression targets with loss='mse' (--config.eval.loss=mse; the frepo preset), "
            "or keep labels non-negative")


def _result(accuracy: jax.Array, start: float) -> EvalResult:
    """:class:`EvalResult` of ``[K]`` accuracies in [0, 1] measured since ``start``.

    Raises:
      FloatingPointError: a non-finite accuracy.
    """
    acc = np.asarray(accuracy, np.float64) * 100.0
    if not np.all(np.isfinite(acc)):
        raise FloatingPointError("evaluation produced non-finite accuracies")
    return EvalResult(acc, float(acc.mean()), float(acc.std()), time.time() - start)


@functools.lru_cache(maxsize=32)
def _compiled_train(protocol: EvalProtocol, num_classes: int, mesh: Optional[Mesh]):
    """``jit((keys, x_syn, y_syn, lr) -> variables [K, ...])``: :func:`train_networks`,
    split along ``mesh``'s ``model`` axis when it has one (each device trains its own
    networks; the variables stay sharded along ``model``)."""

    def train(keys, x_syn, y_syn, lr):
        return train_networks(protocol, num_classes, keys, x_syn, y_syn, lr)[1]

    if not _model_sharded(mesh):
        return jax.jit(train)
    rep = PartitionSpec()
    return jax.jit(jax.shard_map(train, mesh=mesh, in_specs=(PartitionSpec("model"), rep, rep, rep),
                                 out_specs=PartitionSpec("model"), check_vma=False))


@functools.lru_cache(maxsize=32)
def _compiled_correct(protocol: EvalProtocol, num_classes: int, shape: tuple[int, ...],
                      pixel_stats: Optional[tuple[tuple[float, ...], tuple[float, ...]]],
                      mesh: Optional[Mesh]):
    """``jit((variables [K, ...], x [B, *shape], y [B], mask [B]) -> int32 [K])``: each
    network's correct predictions on the masked rows of one test batch (``x`` uint8
    pixels normalised on the device when ``pixel_stats = (mean, std)``)."""
    model = eval_model(protocol, num_classes, shape)

    def correct(variables, x, y, mask):
        if pixel_stats is not None:
            x = gstream.normalize(x, *pixel_stats)
        logits = gnn.predict_many(model, variables, x, protocol.test_batch_size)
        hits = (jnp.argmax(logits, -1) == y[None, :]) & (mask[None, :] > 0)
        return jnp.sum(hits, axis=1, dtype=jnp.int32)

    if not _model_sharded(mesh):
        return jax.jit(correct)
    return jax.jit(correct, out_shardings=parallel.replicated(mesh))


def evaluate_streamed(
    key: jax.Array,
    x_syn: jax.Array,
    y_syn: jax.Array,
    test_batches: Iterable[gstream.Batch],
    num_classes: int,
    protocol: EvalProtocol = EvalProtocol(),
    lr: Optional[float] = None,
    mesh: Optional[Mesh] = None,
    pixel_stats: Optional[tuple[Sequence[float], Sequence[float]]] = None,
) -> EvalResult:
    """:func:`evaluate_synthetic` with the test set streamed: the same K networks (same
    keys, training and mesh layout), tested batch by batch.

    Args:
      key, x_syn, y_syn, num_classes, protocol, lr, mesh: as :func:`evaluate_synthetic`.
      test_batches: ``gold.data.stream.Batch`` es of one size ``B`` (e.g.
        ``gold.data.stream.ordered_batches``): ``x [B, *sample shape]``, int ``y [B]``,
        ``mask [B]`` (0 = padding, not counted). Read one at a time: memory holds a batch.
      pixel_stats: ``(mean, std)`` per channel in [0, 1] units when the batches hold uint8
        pixels (normalised on the device as the synthetic set was); None = batches are
        already the model's input.

    Returns:
      EvalResult with accuracies in percent over the unmasked test samples.

    Raises:
      ValueError: mismatched shapes, no test sample, bad synthetic labels, more model
        shards than networks.
    """
    check_synthetic(x_syn, y_syn, num_classes, protocol)
    start = time.time()
    if mesh is None:
        mesh = evaluation_mesh(protocol.num_models)
    k = protocol.num_models
    keys = jax.random.split(key, k)
    train_args = (jnp.asarray(x_syn), jnp.asarray(y_syn), jnp.float32(protocol.lr if lr is None else lr))
    if _model_sharded(mesh):
        keys, train_args = _sharded_keys(keys, mesh), parallel.replicate(train_args, mesh)
    variables = _compiled_train(protocol, int(num_classes), mesh)(keys, *train_args)
    stats = None if pixel_stats is None else tuple(tuple(float(v) for v in s) for s in pixel_stats)
    correct = _compiled_correct(protocol, int(num_classes), tuple(x_syn.shape[1:]), stats, mesh)
    hits, total = np.zeros(len(keys), np.int64), 0
    for batch in test_batches:
        if tuple(batch.x.shape[1:]) != tuple(x_syn.shape[1:]):
            raise ValueError(f"synthetic samples {tuple(x_syn.shape[1:])} and test samples "
                             f"{tuple(batch.x.shape[1:])} differ in shape")
        args = (batch.x, np.asarray(batch.y, np.int32), np.asarray(batch.mask, np.float32))
        if _model_sharded(mesh):
            args = parallel.replicate(args, mesh)
        hits += np.asarray(correct(variables, *args))
        total += int(np.sum(batch.mask > 0))
    if total == 0:
        raise ValueError("evaluate_streamed got no test samples")
    return _result(hits[:k] / total, start)
