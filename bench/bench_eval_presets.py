"""One stored synthetic set under several evaluation protocols (gold.evaluate.PRESETS).

Run: python bench/bench_eval_presets.py DIR/synthetic.npz [more.npz ...]
         [--presets dc,linba,idc,frepo] [--epochs 300] [--augment none] [--mse]

Each preset keeps the set's stored model (architecture and its overrides) and K; with
``--epochs`` > 0 every preset trains that many epochs (the ``frepo`` warm-up scaled in
proportion), ``--augment`` replaces every preset's augmentation (CPU-size runs: none),
``--mse`` adds the stored protocol with ``loss='mse'``. Prints one line per (set,
protocol): accuracy mean +- std over K networks in percent, and wall seconds (compile
included).
"""

import argparse
import dataclasses

import jax

from gold.distill import load_synthetic
from gold.evaluate import EvalProtocol


def protocols(stored: EvalProtocol, presets: list[str], dataset: str, ipc: int, epochs: int,
              augment: str, mse: bool) -> dict[str, EvalProtocol]:
    """Name -> protocol: each preset on the stored model / K, with the CPU-size overrides."""
    keep = dict(model=stored.model, model_overrides=stored.model_overrides, num_models=stored.num_models)
    out = {}
    for name in presets:
        p = EvalProtocol.preset(name, dataset, ipc, **keep)
        changes = {}
        if epochs > 0 and epochs != p.epochs:
            changes["epochs"] = epochs
            if p.warmup_epochs:
                changes["warmup_epochs"] = p.warmup_epochs * epochs // p.epochs
        if augment:
            changes["augment"] = augment
        out[name] = dataclasses.replace(p, **changes)
    if mse:
        out["stored+mse"] = dataclasses.replace(stored, loss="mse")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--presets", default="dc,linba,idc,frepo")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--augment", default="none")
    parser.add_argument("--mse", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in args.paths:
        syn = load_synthetic(path)
        table = protocols(syn.protocol, [p for p in args.presets.split(",") if p], syn.dataset, syn.ipc,
                          args.epochs, args.augment, args.mse)
        for name, protocol in table.items():
            res = syn.evaluate(jax.random.key(args.seed), protocol=protocol)
            print(f"{path} {name}: {res.mean:.2f} +- {res.std:.2f} ({protocol.train_epochs()} epochs, "
                  f"{protocol.optimizer}/{protocol.loss}/{protocol.schedule}, batch {protocol.batch_size}, "
                  f"augment {protocol.augment}, cutmix {protocol.cutmix}) {res.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
