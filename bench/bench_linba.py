"""LinBa's compiled memory with and without per-step rematerialisation.

Compiles (never runs) one LinBa step, the gradient of the real-batch loss through
``--steps`` unrolled momentum-SGD steps w.r.t. bases and coefficients, with
``remat=True`` (``jax.checkpoint`` per step) and ``remat=False``, and prints XLA's
``memory_analysis()`` of each (temporary buffers = the activations the backward pass
keeps; arguments and outputs are the same for both).

  python bench/bench_linba.py --dataset=mnist --width=32 --steps=150
  python bench/bench_linba.py --dataset=cifar10 --width=128 --steps=150

Shapes only: random arrays stand in for the data (no data folder needed).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import ml_collections

from gold import data as gdata
from gold.configs import linba as linba_config
from gold.distill import common, registry


def compiled_memory(dataset: str, width: int, steps: int, remat: bool, batch_real: int) -> dict:
    """Memory analysis (bytes) and compile seconds of one jitted LinBa step."""
    info = gdata.get_info(dataset)
    shape, k = tuple(info.image_shape), int(info.num_classes)
    cfg = linba_config.get_config(dataset)
    cfg.model = ml_collections.ConfigDict({**cfg.model.to_dict(), "width": width})
    cfg.unroll_steps, cfg.remat, cfg.batch_real = steps, remat, batch_real
    n = max(batch_real, 32)
    x = jax.random.normal(jax.random.key(0), (k * n, *shape))
    y = jnp.repeat(jnp.arange(k), n)
    real = common.make_real_data(x, y, k, batch_real)
    algo = registry.build(cfg, real)
    state = jax.eval_shape(algo.init, jax.random.key(0), real)
    t0 = time.time()
    compiled = jax.jit(algo.step).lower(state, jax.random.key(1), real).compile()
    mem = compiled.memory_analysis()
    return {"remat": remat, "steps": steps, "width": width, "dataset": dataset,
            "rows": algo.settings["images_per_class"], "minibatch_rows": algo.settings["minibatch_rows"],
            "temp_mb": mem.temp_size_in_bytes / 2**20, "argument_mb": mem.argument_size_in_bytes / 2**20,
            "output_mb": mem.output_size_in_bytes / 2**20, "compile_s": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch_real", type=int, default=64)
    a = p.parse_args()
    for remat in (True, False):
        print(json.dumps(compiled_memory(a.dataset, a.width, a.steps, remat, a.batch_real)), flush=True)


if __name__ == "__main__":
    main()
