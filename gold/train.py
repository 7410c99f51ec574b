"""Train one classifier on a real dataset and report its test accuracy (`launch/train.py`)."""

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
from gold import workdir as gwork


def train_and_evaluate(config: Any, workdir: str) -> dict:
    """Train ``config.model`` on ``config.data`` for ``config.epochs``; write artifacts.

    Writes ``config.json``, ``metrics.csv`` (one row per epoch) and ``result.json``
    (``test_accuracy`` in percent, ``train_loss``, ``seconds``) into ``workdir``.
    """
    start = time.time()
    workdir = gwork.prepare_workdir(workdir, config)
    ds = config_utils.load_data(config.data)
    model = config_utils.build_model(config.model, ds.num_classes, ds.x_train.shape[1:])
    steps_per_epoch = gnn.num_batches(len(ds.x_train), config.batch_size)
    schedule = gnn.step_decay(config.lr, steps_per_epoch, (config.epochs // 2,), 0.1)
    tx = gnn.make_optimizer(
        config.optimizer, schedule, momentum=config.momentum, weight_decay=config.weight_decay
    )
    augment = gaug.get_augment(config.augment)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)

    key = jax.random.key(config.seed)
    variables = gnn.init_variables(model, jax.random.fold_in(key, 0), x.shape[1:])
    state = gnn.TrainState(variables, tx.init(variables["params"]))
    epoch_fn = jax.jit(
        lambda s, k: gnn.train_epoch(model, tx, s, x, y, k, batch_size=config.batch_size, augment=augment)[:2]
    )
    test_fn = jax.jit(
        lambda v: gnn.accuracy_many(model, jax.tree.map(lambda a: a[None], v), x_test, y_test)[0]
    )
    metrics = gwork.MetricsWriter(workdir)
    train_loss = float("nan")
    for epoch in range(config.epochs):
        state, loss = epoch_fn(state, jax.random.fold_in(key, epoch + 1))
        train_loss = float(loss)
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch + 1}; lower config.lr")
        metrics.write(epoch + 1, train_loss=train_loss, test_accuracy=100.0 * float(test_fn(state.variables)))
    result = {
        "test_accuracy": 100.0 * float(test_fn(state.variables)),
        "train_loss": train_loss,
        "dataset": ds.name,
        "num_train": int(len(ds.x_train)),
        "seconds": time.time() - start,
    }
    gwork.write_json(os.path.join(workdir, "result.json"), result)
    return result
