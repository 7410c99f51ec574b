"""A bounded pool of networks trained as distillation goes (IDM's queue, FRePo's pool).

The pool holds M networks of one architecture as *stacked* variables and optimiser
states (every leaf ``[M, ...]``), so training several of them is one ``vmap`` and the
whole pool is an ordinary pytree: it lives in ``DistillState.extra`` and the loop's
orbax checkpoint stores and restores it exactly.

Per slot the pool keeps a ``valid`` flag (a slot holds a network), an ``age`` (SGD
updates the network has received since it was initialised) and an accuracy meter
(``correct`` / ``seen`` over the training batches since the meter was last reset:
IDM weights its cross-entropy term by it). ``pushes`` counts insertions; the pool is a
FIFO queue because insertion ``n`` goes to slot ``n mod M`` (slots fill in order,
then the oldest insertion is replaced).

Every operation is pure and jittable: :class:`NetPoolSpec` holds what is static (the
model, the network optimiser, the input shape, M) and its methods map a
:class:`NetPool` to a new one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from gold import nn as gnn

PyTree = Any
BatchFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


@struct.dataclass
class NetPool:
    """M network slots (a pytree; store it in ``DistillState.extra``).

    Attributes:
      variables: network variables, every leaf ``[M, ...]``.
      opt_state: their optimiser states, every leaf ``[M, ...]``.
      valid: bool ``[M]``, the slot holds a network.
      age: int32 ``[M]``, SGD updates since the slot's network was initialised.
      correct: float32 ``[M]``, correctly classified training samples since the meter
        was last reset.
      seen: float32 ``[M]``, training samples seen since the meter was last reset.
      pushes: int32 scalar, networks inserted so far (the next goes to slot
        ``pushes mod M``).
    """

    variables: PyTree
    opt_state: PyTree
    valid: jax.Array
    age: jax.Array
    correct: jax.Array
    seen: jax.Array
    pushes: jax.Array

    @property
    def size(self) -> int:
        """M, the number of slots (static)."""
        return int(self.valid.shape[0])

    def num_valid(self) -> jax.Array:
        """int32 scalar, slots that hold a network."""
        return jnp.sum(self.valid.astype(jnp.int32))

    def accuracy(self) -> jax.Array:
        """float32 ``[M]`` training accuracy in percent since the meters were reset (0
        where nothing was seen; torchnet's ``ClassErrorMeter(accuracy=True)`` units)."""
        return jnp.where(self.seen > 0, 100.0 * self.correct / jnp.maximum(self.seen, 1.0), 0.0)

    def slot(self, i: jax.Array | int) -> PyTree:
        """The variables of slot ``i`` (int32 scalar, may be traced)."""
        return jax.tree.map(lambda leaf: leaf[i], self.variables)

    def reset_meters(self) -> "NetPool":
        """The pool with every accuracy meter at zero."""
        return self.replace(correct=jnp.zeros_like(self.correct), seen=jnp.zeros_like(self.seen))


def _where_slots(mask: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """Per slot: ``new`` where ``mask [M]`` else ``old`` (leaves ``[M, ...]``)."""
    return jax.tree.map(lambda a, b: jnp.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b), new, old)


@dataclasses.dataclass(frozen=True)
class NetPoolSpec:
    """The static part of a pool and its operations.

    Attributes:
      model: the network architecture (a flax module with ``train`` argument).
      tx: the networks' optimiser (each slot has its own state).
      input_shape: ``(H, W, C)`` of the images the networks see.
      size: M, the number of slots (>= 1).
      loss: per-sample training loss ``(logits [B, K], labels) -> [B]`` (default
        cross-entropy; FRePo trains with MSE on centred labels).
    """

    model: nn.Module
    tx: optax.GradientTransformation
    input_shape: tuple[int, ...]
    size: int
    loss: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None

    def __post_init__(self) -> None:
        if int(self.size) < 1:
            raise ValueError(f"a network pool needs size >= 1, got {self.size}")

    # -------------------------------------------------------------- fresh networks
    def fresh(self, keys: jax.Array) -> tuple[PyTree, PyTree]:
        """Freshly initialised variables and optimiser states, one per key ``[n]``
        (leaves ``[n, ...]``)."""

        def one(k):
            v = gnn.init_variables(self.model, k, self.input_shape)
            return v, self.tx.init(v["params"])

        return jax.vmap(one)(keys)

    def init(self, key: jax.Array, filled: int | jax.Array = 0) -> NetPool:
        """A pool whose first ``filled`` slots hold fresh networks (``0 <= filled <= M``;
        the other slots are invalid placeholders of the same shapes). ``filled`` may be
        traced.

        Raises:
          ValueError: a Python int ``filled`` outside ``[0, M]``.
        """
        if isinstance(filled, int) and not 0 <= filled <= self.size:
            raise ValueError(f"filled must be in [0, {self.size}], got {filled}")
        variables, opt_state = self.fresh(jax.random.split(key, self.size))
        m = self.size
        return NetPool(variables, opt_state, jnp.arange(m) < filled, jnp.zeros(m, jnp.int32),
                       jnp.zeros(m, jnp.float32), jnp.zeros(m, jnp.float32), jnp.asarray(filled, jnp.int32))

    def push(self, pool: NetPool, key: jax.Array) -> NetPool:
        """Insert a fresh network (``fresh(key[None])``): slot ``pushes mod M`` (an empty
        slot while the pool fills, then the oldest insertion: a bounded FIFO queue)."""
        i = pool.pushes % self.size
        variables, opt_state = self.fresh(key[None])  # one network, leaves [1, ...]
        put = lambda full, one: full.at[i].set(one[0])
        return pool.replace(
            variables=jax.tree.map(put, pool.variables, variables),
            opt_state=jax.tree.map(put, pool.opt_state, opt_state),
            valid=pool.valid.at[i].set(True), age=pool.age.at[i].set(0),
            correct=pool.correct.at[i].set(0.0), seen=pool.seen.at[i].set(0.0),
            pushes=pool.pushes + 1)

    def reset_older_than(self, pool: NetPool, key: jax.Array, max_age: int | jax.Array) -> NetPool:
        """Re-initialise every valid slot whose ``age >= max_age`` (FRePo's model reset);
        the slot stays where it is and ``pushes`` is unchanged."""
        return self._refresh(pool, pool.valid & (pool.age >= max_age), key)

    def _refresh(self, pool: NetPool, mask: jax.Array, key: jax.Array) -> NetPool:
        """Fresh networks (one key per slot) in the slots of bool ``mask [M]``."""
        variables, opt_state = self.fresh(jax.random.split(key, self.size))
        zero_f = jnp.zeros_like(pool.correct)
        return pool.replace(
            variables=_where_slots(mask, variables, pool.variables),
            opt_state=_where_slots(mask, opt_state, pool.opt_state),
            valid=pool.valid | mask,
            age=jnp.where(mask, 0, pool.age),
            correct=jnp.where(mask, zero_f, pool.correct),
            seen=jnp.where(mask, zero_f, pool.seen))

    # ------------------------------------------------------------------- sampling
    def sample(self, pool: NetPool, key: jax.Array, n: int = 1) -> jax.Array:
        """int32 ``[n]`` distinct slots drawn uniformly among the valid ones (the
        references' ``random.shuffle(list)[:n]``). ``n`` (static) must not exceed the
        number of valid slots; invalid slots are drawn only in that case."""
        scores = jnp.where(pool.valid, jax.random.uniform(key, (self.size,)), 2.0)
        return jnp.argsort(scores)[:n].astype(jnp.int32)

    # ------------------------------------------------------------------- training
    def train(self, pool: NetPool, slots: jax.Array, key: jax.Array, batch_fn: BatchFn,
              steps: int) -> NetPool:
        """``steps`` SGD updates (training mode) of each network in ``slots``.

        Args:
          pool: the pool.
          slots: int32 ``[S]`` distinct slots to train (invalid ones are left alone).
          key: PRNG key; slot ``slots[s]`` at update ``t`` draws its batch with
            ``batch_fn(split(split(key, S)[s], steps)[t])``.
          batch_fn: ``key -> (images [B, H, W, C], labels [B] int or [B, K] soft)``:
            the data source (real data for IDM, the synthetic set for FRePo). Its
            output is treated as data (no gradient flows into it).
          steps: updates per network (static).

        Returns:
          the pool with those networks, optimiser states, ages (+ ``steps``) and
          accuracy meters (+ the batches' correct / seen counts) updated.
        """
        sub_vars = jax.tree.map(lambda leaf: leaf[slots], pool.variables)
        sub_opt = jax.tree.map(lambda leaf: leaf[slots], pool.opt_state)

        def train_one(variables, opt_state, k):
            def body(st, kt):
                x, y = jax.tree.map(jax.lax.stop_gradient, batch_fn(kt))
                st, _, logits = gnn.train_step(self.model, self.tx, st, x, y, self.loss)
                correct = jnp.sum(jnp.argmax(logits, -1) == gnn.hard_labels(y)).astype(jnp.float32)
                return st, (correct, jnp.float32(x.shape[0]))

            st, (correct, seen) = jax.lax.scan(body, gnn.TrainState(variables, opt_state),
                                               jax.random.split(k, steps))
            return st.variables, st.opt_state, jnp.sum(correct), jnp.sum(seen)

        keys = jax.random.split(key, slots.shape[0])
        new_vars, new_opt, correct, seen = jax.vmap(train_one)(sub_vars, sub_opt, keys)
        ok = pool.valid[slots]
        keep = lambda new, old: jnp.where(ok.reshape(-1, *([1] * (new.ndim - 1))), new, old)
        new_vars = jax.tree.map(keep, new_vars, sub_vars)
        new_opt = jax.tree.map(keep, new_opt, sub_opt)
        scatter = lambda full, part: full.at[slots].set(part)
        return pool.replace(
            variables=jax.tree.map(scatter, pool.variables, new_vars),
            opt_state=jax.tree.map(scatter, pool.opt_state, new_opt),
            age=pool.age.at[slots].add(jnp.where(ok, steps, 0)),
            correct=pool.correct.at[slots].add(jnp.where(ok, correct, 0.0)),
            seen=pool.seen.at[slots].add(jnp.where(ok, seen, 0.0)))


__all__ = ["BatchFn", "NetPool", "NetPoolSpec"]
