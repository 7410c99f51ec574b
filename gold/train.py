"""Train one classifier on a real dataset and report its test accuracy (`launch/train.py`).

Resumable: the training state is checkpointed every ``config.checkpoint_every`` epochs
under ``workdir/checkpoints``; rerunning on the same workdir continues from the newest
checkpoint and gives the same final network as an uninterrupted run (epoch ``e`` always
uses ``fold_in(key, e + 1)``). A workdir holding another config is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gold import augment as gaug
from gold import config_utils
from gold import nn as gnn
from gold import progress
from gold import workdir as gwork
from gold.checkpoint import Checkpointer

CHECKPOINT_DIR = "checkpoints"
# Fields that may change when a run is resumed (where data is read from, cadence).
HARMLESS_FIELDS: tuple[str, ...] = ("data.dir", "checkpoint_every")


def train_and_evaluate(config: Any, workdir: str) -> dict:
    """Train ``config.model`` on ``config.data`` for ``config.epochs``; write artifacts.

    Writes ``config.json``, ``metrics.csv`` + TensorBoard events (one row per epoch:
    ``train_loss``, ``test_accuracy`` in percent), ``checkpoints/`` and ``result.json``
    (``test_accuracy`` in percent, ``train_loss``, ``seconds`` including interrupted
    attempts) into ``workdir``. A finished workdir returns its stored result.

    Raises:
      ValueError: ``workdir`` holds a run with a different config.
      FloatingPointError: a non-finite training loss.
    """
    start = time.time()
    workdir, finished = gwork.start_run(workdir, config, HARMLESS_FIELDS)
    if finished is not None:
        return finished
    epochs = int(config.epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    ds = config_utils.load_data(config.data)
    model = config_utils.build_model(config.model, ds.num_classes, ds.x_train.shape[1:])
    steps_per_epoch = gnn.num_batches(len(ds.x_train), config.batch_size)
    schedule = gnn.step_decay(config.lr, steps_per_epoch, (epochs // 2,), 0.1)
    tx = gnn.make_optimizer(
        config.optimizer, schedule, momentum=config.momentum, weight_decay=config.weight_decay
    )
    augment = gaug.get_augment(config.augment)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

    key = jax.random.key(config.seed)
    variables = gnn.init_variables(model, jax.random.fold_in(key, 0), x.shape[1:])
    state = gnn.TrainState(variables, tx.init(variables["params"]))

    ckpt = Checkpointer(os.path.join(workdir, CHECKPOINT_DIR))
    ckpt_every = int(config.get("checkpoint_every", 1) or 0)
    epoch0, elapsed0, train_loss = 0, 0.0, float("nan")
    latest = ckpt.latest_step()
    if latest is not None:
        like = {"state": state, "epoch": np.int64(0), "elapsed": np.float64(0), "train_loss": np.float64(0)}
        restored = ckpt.restore(latest, like)
        state = jax.tree.map(jnp.asarray, restored["state"])
        epoch0, elapsed0 = int(restored["epoch"]), float(restored["elapsed"])
        train_loss = float(restored["train_loss"])
        print(f"resumed from checkpoint at epoch {epoch0}", flush=True)

    epoch_fn = jax.jit(
        lambda s, k: gnn.train_epoch(model, tx, s, x, y, k, batch_size=config.batch_size, augment=augment)[:2]
    )
    test_fn = jax.jit(
        lambda v: gnn.accuracy_many(model, jax.tree.map(lambda a: a[None], v), x_test, y_test)[0]
    )
    metrics = gwork.MetricsWriter(workdir, resume_step=epoch0)
    bar = progress.bar(epochs, "train epochs", initial=epoch0)
    for epoch in range(epoch0, epochs):
        state, loss = epoch_fn(state, jax.random.fold_in(key, epoch + 1))
        train_loss = float(loss)
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}; lower config.lr")
        test_accuracy = 100.0 * float(test_fn(state.variables))
        metrics.write(epoch + 1, train_loss=train_loss, test_accuracy=test_accuracy)
        if (ckpt_every and (epoch + 1) % ckpt_every == 0) or epoch + 1 == epochs:
            ckpt.save(epoch + 1, {"state": state, "epoch": np.int64(epoch + 1),
                                  "elapsed": np.float64(elapsed0 + time.time() - start),
                                  "train_loss": np.float64(train_loss)})
        bar.update(1)
        bar.set_postfix({"loss": train_loss, "test_acc": test_accuracy})
    bar.close()
    metrics.close()
    ckpt.close()
    result = {
        "test_accuracy": 100.0 * float(test_fn(state.variables)),
        "train_loss": train_loss,
        "dataset": ds.name,
        "num_train": int(len(ds.x_train)),
        "epochs": epochs,
        "seconds": elapsed0 + time.time() - start,
    }
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    return result
