"""One-line documentation of config fields, printed by ``--show_config``.

:func:`describe` pairs every leaf of a config with its doc: the shared fields below
(:data:`SHARED`), the launcher's own table (:data:`UTILITY`, :data:`TRAIN`,
:data:`BUFFER`, :data:`SWEEP`, ...) and, for a distillation config, the algorithm's
(the hook :func:`algorithm_docs`). A field without a doc is listed with an empty one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

SHARED: dict[str, str] = {
    "algorithm": "distillation algorithm (registered names: gold.distill.registry.names())",
    "max_abs_ratio": "stop when a synthetic pixel exceeds this x the largest real pixel (exploding)",
    "data.name": "dataset (digits is embedded; others read data.dir)",
    "data.dir": "folder with the dataset files (default $GOLD_DATA_DIR)",
    "data.zca": "ZCA-whiten the images (regularisation 0.1)",
    "data.train_per_class": "> 0: keep the first n training images per class (tiny runs)",
    "data.test_per_class": "> 0: keep the first n test images per class",
    "model.name": "network (convnet | mlp | lenet | alexnet | vgg11 | resnet18 ...)",
    "model.width": "ConvNet channels per layer",
    "model.depth": "ConvNet blocks (default: pool down to 4x4 features)",
    "model.norm": "ConvNet normalisation (instancenorm | batchnorm | none ...)",
    "model.conv_impl": "convolution weight gradient: auto | shifted | xla",
    "seed": "PRNG seed of the run",
    "ipc": "synthetic images per class",
    "iterations": "distillation iterations",
    "batch_real": "real images per class in each iteration's batch",
    "init": "synthetic set initialisation: noise | real",
    "class_loop": "per-class loop inside jit: map | unroll",
    "selection.indicator": "utility indicator ranking the real samples (none = keep all)",
    "selection.ratio": "kept fraction per class, 0 < ratio <= 1",
    "selection.utility_path": "a saved utility.npz (or an official score .json); '' = compute",
    "selection.stratum": "1..num_strata: keep one utility stratum instead (0 = off)",
    "selection.num_strata": "number of utility strata per class",
    "selection.policy": "greedy (top utility) | greedy_diverse",
    "runtime_pruning.enabled": "prune each real batch during distillation (paper 5.1)",
    "runtime_pruning.ratio": "PRUNED fraction of each real batch",
    "runtime_pruning.tau": "softmax temperature of the pruning scores",
    "runtime_pruning.start": "fraction of outer loops (or iterations) before pruning starts",
    "runtime_pruning.start_unit": "outer_loop | iteration",
    "eval.num_models": "networks trained on the synthetic set for the accuracy",
    "eval.epochs": "training epochs of each evaluation network",
    "eval.batch_size": "evaluation training batch size",
    "eval.lr": "evaluation base learning rate (of the optimizer, shaped by eval.schedule)",
    "eval.momentum": "evaluation SGD momentum (sgd only)",
    "eval.weight_decay": "evaluation L2 weight decay added to the gradient (0 = none)",
    "eval.augment": "evaluation augmentation (none | dsa | dc_mnist | dc_bn)",
    "eval.dsa_strategy": "DSA op groups of the evaluation ('' = the run's dsa_strategy)",
    "eval.optimizer": "evaluation optimizer: sgd | adam",
    "eval.loss": "evaluation loss: ce (soft-label cross-entropy) | mse (centred one-hot / given float targets)",
    "eval.schedule": "lr schedule: reference (x lr_decay + fresh optimizer after epoch epochs//2 + 1; "
                     "epochs + 1 epochs) | multistep | cosine | constant",
    "eval.lr_decay": "lr factor of each drop (reference, multistep)",
    "eval.lr_decay_epochs": "reference: epochs before each lr drop (() = epochs // 2 + 2)",
    "eval.lr_decay_fractions": "multistep: fractions of eval.epochs at which the lr drops",
    "eval.momentum_reset": "each lr drop starts a fresh optimizer (reference, multistep)",
    "eval.warmup_epochs": "cosine: epochs of linear lr warm-up from 0",
    "eval.final_lr_fraction": "cosine: final lr as a fraction of eval.lr",
    "eval.cutmix": "probability of CutMix on each evaluation minibatch (0 = off)",
    "eval.cutmix_beta": "CutMix box ratio ~ Beta(beta, beta)",
    "eval.model": "evaluation network ('' = model.name)",
    "eval.test_batch_size": "test batch size",
    "eval.max_test": "> 0: test on the first n test images only",
    "eval_every": "iterations between intermediate evaluations (0 = final only)",
    "checkpoint_every": "iterations (epochs for train / utility) between checkpoints",
    "log_every": "iterations between log lines / metrics.csv rows",
    "mesh.data": "devices along the data axis (0 = auto; > 1 refused: nothing split along it yet)",
    "mesh.model": "devices along the model axis (the K evaluation networks, the utility trials; 0 = auto)",
    "mesh.class": "devices along the class axis (DC/DSA/DM's per-class loop; a divisor of K; 0 = auto)",
    "class_groups": "> 0: distil this many disjoint class groups one after another and merge "
                    "(DM only; gold.distill.class_split); 0 = one joint run",
}

# Utility-indicator settings (configs/utility.py top level; selection.utility.* of the
# experiment configs).
_UTILITY_SETTINGS: dict[str, str] = {
    "trials": "networks trained from scratch (scores are means over trials)",
    "epochs": "training epochs of each trial",
    "lr": "learning rate of the trials (constant)",
    "batch_size": "minibatch size of the trials",
    "optimizer": "adam | adamw | sgd",
    "weight_decay": "L2 / decoupled weight decay",
    "momentum": "SGD momentum (ignored by Adam)",
    "trials_per_chunk": "trials trained at once (bounds memory; 0 = all)",
    "trial_mode": "vmap | unroll | auto (unroll on CPU, vmap on GPU)",
    "sigma": "Gaussian smoothing of the loss curve along epochs",
    "epoch": "epochs of the loss curve used (-1 = all)",
    "el2n_epoch": "EL2N epoch (0 = ceil(epochs / 10))",
    "knn_k": "K of the kNN density indicator",
    "num_clusters": "K-means clusters per class (cluster indicator)",
    "kmeans_iters": "K-means iterations",
    "ipc": "real-init images per class (init_distance)",
    "save_features": "store the GAP features of trial 0 in utility.npz",
    "model.name": "classifier of the trials",
    "model.width": "ConvNet channels per layer of the trials",
    "model.depth": "ConvNet blocks of the trials",
    "model.norm": "ConvNet normalisation of the trials",
}

UTILITY: dict[str, str] = {
    "indicator": "loss | el2n | forgetting | density | cluster | init_distance",
    "init_indices_path": "real-init indices for init_distance ('' = drawn from the seed)",
    "checkpoint_every": "epochs between checkpoints of the trials (0 = none)",
    **{k: v for k, v in _UTILITY_SETTINGS.items() if not k.startswith("model.")},
}

TRAIN: dict[str, str] = {
    "epochs": "training epochs (lr x0.1 at half)",
    "batch_size": "minibatch size",
    "optimizer": "sgd | adam | adamw",
    "lr": "learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "augment": "training augmentation (none | dsa | dc_mnist)",
    "checkpoint_every": "epochs between checkpoints (0 = none)",
}

BUFFER: dict[str, str] = {
    "min_per_class": "selection floor per class (the MTT ipc when it binds)",
    "num_experts": "expert trajectories (may grow on a rerun)",
    "epochs": "training epochs of each expert",
    "lr": "expert SGD learning rate",
    "momentum": "expert SGD momentum",
    "weight_decay": "expert SGD weight decay",
    "batch_size": "expert minibatch size",
    "dsa_strategy": "DSA augmentation of the expert batches ('none' = off)",
    "experts_per_chunk": "experts per program and per file",
    "expert_mode": "auto | vmap | sequential",
    "dtype": "stored parameter dtype: float32 | bfloat16",
    "test_batch_size": "test batch size",
    "max_test": "> 0: test the experts on the first n test images only",
}

_EXPERIMENT: dict[str, str] = {
    "analysis.features": "diversity features: auto | utility | none",
    "analysis.outlier_std": "outlier: distance to class centre > mean + k * std",
    "selection.utility.gradients": "coreset gradient embedding: last_layer | bias",
    "selection.utility.val_size": "GLISTER validation samples",
    "selection.utility.lam": "GradMatch ridge weight",
    "selection.utility.eta": "GLISTER look-ahead step",
    **{f"selection.utility.{k}": v for k, v in _UTILITY_SETTINGS.items()},
}

SWEEP: dict[str, str] = {
    "ratios": "kept fractions of the sweep",
    "repeats": "runs per ratio (seeds seed, seed+1, ...)",
    "full_repeats": "full-data runs (0 = repeats)",
    "gamma_rule": "at_least | within",
    "gamma_monotone": "gamma must be followed by comparable ratios only",
    **_EXPERIMENT,
}

STRATIFY: dict[str, str] = {
    "repeats": "runs per stratum",
    "strata": "strata to run (() = all)",
    **_EXPERIMENT,
}

MONTE_CARLO: dict[str, str] = {
    "monte_carlo.trials": "K random subsets",
    "monte_carlo.subset_ratio": "subset size M / N",
    "monte_carlo.balanced": "M / C samples per class instead of uniform subsets",
    "monte_carlo.chunk": "subsets per vmapped program",
    "monte_carlo.crn": "common random numbers within a chunk",
    "monte_carlo.sequential_check": "also run the first n subsets one by one",
    "monte_carlo.convergence": "trials per half of the split-half curve (() = powers of 2)",
    "monte_carlo.mode": "hybrid | vmap | sequential",
}

EVALUATE: dict[str, str] = {
    "synthetic": "comma-separated synthetic.npz files or distillation workdirs",
    "labels": "row labels (() = from each set's metadata)",
    "models": "architectures to evaluate on",
    "eval.num_models": "networks per cell (0 = the set's stored protocol)",
    "eval.epochs": "epochs (0 = the set's stored protocol)",
}


def algorithm_docs(config: Any) -> dict[str, str]:
    """Hook for algorithm-specific field docs of a distillation config: the field docs
    of ``config.algorithm``'s settings dataclass (``gold.distill.registry.settings_docs``);
    ``{}`` for a config without ``algorithm``.

    Raises:
      ValueError: an unknown algorithm name.
    """
    name = config.get("algorithm") if hasattr(config, "get") else None
    if not name:
        return {}
    from gold.distill import registry  # local: imports JAX

    names = " | ".join(registry.names())
    return {"algorithm": f"distillation algorithm ({names})", **registry.settings_docs(str(name))}


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if hasattr(value, "items") and not isinstance(value, (str, bytes)):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out.extend(_leaves(v, f"{prefix}{k}."))
        return out
    return [(prefix[:-1], value)]


def describe(config: Any, extra_docs: Optional[Mapping[str, str]] = None) -> list[tuple[str, Any, str]]:
    """Every leaf field of ``config`` with its value and one-line doc.

    Args:
      config: a ConfigDict (or nested mapping).
      extra_docs: docs that take precedence over :data:`SHARED` (the launcher's table,
        :func:`algorithm_docs`).

    Returns:
      ``[(dotted path, value, doc)]`` in the config's order; doc is ``''`` when unknown.
    """
    docs = {**SHARED, **(extra_docs or {})}
    return [(path, value, docs.get(path, "")) for path, value in _leaves(config)]


def format_table(rows: list[tuple[str, Any, str]]) -> str:
    """``path = value  # doc`` lines, aligned."""
    width = max((len(f"{p} = {v!r}") for p, v, _ in rows), default=0)
    lines = []
    for path, value, doc in rows:
        text = f"{path} = {value!r}"
        lines.append(f"{text:<{width}}  # {doc}" if doc else text)
    return "\n".join(lines)
