"""Foundation speed: one ConvNetD3 training step, and K-vmapped vs sequential evaluation.

Run: python bench/bench_train.py [--quick]
Prints, in one run on this machine:
  1. one SGD step (B=256, ConvNetD3 width 128, 32x32x3) with each conv implementation;
  2. evaluation of an IPC-10 CIFAR-sized synthetic set (100 images) by K=20 networks:
     all K in one vmapped program vs the same work one network at a time.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gold import models as gmodels
from gold import nn as gnn
from gold.evaluate import EvalProtocol, evaluate_synthetic


def timed(fn, *args, repeats=3):
    """Median wall seconds of fn(*args) after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_train_step(conv_impl: str, batch: int = 256) -> float:
    model = gmodels.get_model("convnet", 10, (32, 32, 3), conv_impl=conv_impl)
    tx = gnn.sgd(0.01)
    v = gnn.init_variables(model, jax.random.key(0), (32, 32, 3))
    state = gnn.TrainState(v, tx.init(v["params"]))
    x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
    y = jnp.arange(batch) % 10
    step = jax.jit(lambda s: gnn.train_step(model, tx, s, x, y)[0])
    return timed(step, state)


def bench_eval(k: int, epochs: int, n_test: int) -> tuple[float, float]:
    x_syn = jax.random.normal(jax.random.key(0), (100, 32, 32, 3))
    y_syn = jnp.arange(100) % 10
    x_test = jax.random.normal(jax.random.key(1), (n_test, 32, 32, 3))
    y_test = jnp.arange(n_test) % 10
    many = EvalProtocol(num_models=k, epochs=epochs)
    one = EvalProtocol(num_models=1, epochs=epochs)
    key = jax.random.key(2)
    evaluate_synthetic(key, x_syn, y_syn, x_test, y_test, 10, many)  # compile
    evaluate_synthetic(key, x_syn, y_syn, x_test, y_test, 10, one)
    t = time.perf_counter()
    evaluate_synthetic(key, x_syn, y_syn, x_test, y_test, 10, many)
    t_many = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(k):
        evaluate_synthetic(jax.random.fold_in(key, i), x_syn, y_syn, x_test, y_test, 10, one)
    t_seq = time.perf_counter() - t
    return t_many, t_seq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer eval epochs / test images")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    for impl in ("xla", "shifted"):
        print(f"train step B=256 ConvNetD3 conv_impl={impl}: {bench_train_step(impl):.3f} s")
    epochs, n_test = (30, 2000) if args.quick else (300, 10000)
    t_many, t_seq = bench_eval(20, epochs, n_test)
    print(
        f"evaluation K=20, IPC-10 CIFAR-sized, {epochs} epochs, {n_test} test images: "
        f"vmapped {t_many:.1f} s, sequential {t_seq:.1f} s, speed-up {t_seq / t_many:.2f}x"
    )


if __name__ == "__main__":
    main()
