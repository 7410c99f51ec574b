"""Run distillation steps: the pure functions both the run loop and the Monte-Carlo
indicator call.

* :func:`advance` runs steps ``state.iteration .. stop-1`` of an algorithm inside one
  ``lax.while_loop`` (``stop`` is traced: one compilation serves every chunk) and
  returns the chunk's mean metrics and a health flag. It stops at the first unhealthy
  step: a non-finite loss or parameter, or decoded images whose magnitude exceeds
  ``max_abs`` (exploding values that are still finite). The host looks at the result
  once per chunk only, so there is no device-to-host sync on every step.
* :func:`distill` = init + :func:`advance` to ``iterations`` + the synthetic set, as
  one pure, jittable, ``vmap``-able function of the run's root key.

Step ``i`` always uses ``gold.rng.step_key(steps_key, i)``: chunked, resumed and
uninterrupted runs draw the same randomness.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gold import rng
from gold.distill import common


class Progress(NamedTuple):
    """What :func:`advance` reports about a chunk of steps.

    Attributes:
      metrics: ``{name: float32 scalar}`` mean of each step metric over the steps run.
      steps: int32, steps run in this chunk.
      healthy: bool, every step run was healthy.
      max_abs: float32, largest absolute decoded pixel after the last step run.
    """

    metrics: dict
    steps: jax.Array
    healthy: jax.Array
    max_abs: jax.Array


def healthy(algo: common.Algorithm, state: common.DistillState, loss: jax.Array,
            max_abs: float) -> tuple[jax.Array, jax.Array]:
    """(bool: finite loss and parameters and decoded images within ``max_abs``,
    float32 largest absolute decoded value)."""
    peak = jnp.max(jnp.abs(algo.synthetic(state).x))
    ok = jnp.all(jnp.isfinite(loss)) & common.tree_all_finite(state.params) & (peak <= max_abs)
    return ok, peak


def advance(algo: common.Algorithm, state: common.DistillState, steps_key: jax.Array,
            real: common.RealData, stop: jax.Array | int,
            max_abs: float = float("inf")) -> tuple[common.DistillState, Progress]:
    """Run steps ``state.iteration .. stop-1`` (fewer if one is unhealthy).

    Args:
      algo: the algorithm.
      state: the state after ``state.iteration`` steps.
      steps_key: the run's ``steps`` stream (``gold.rng``).
      real: the selected real data.
      stop: iteration to stop at (int or traced int32).
      max_abs: bound on the absolute decoded pixel values (normalised units) past
        which a step counts as exploding.

    Returns:
      (state after the last step run, :class:`Progress`). When ``healthy`` is False the
      state is the first unhealthy one, at iteration ``state.iteration``.
    """
    shapes = jax.eval_shape(algo.step, state, steps_key, real)[1]
    zeros = {k: jnp.zeros((), jnp.float32) for k in shapes}

    def cond(carry):
        st, _, _, ok, _ = carry
        return jnp.logical_and(st.iteration < stop, ok)

    def body(carry):
        st, sums, n, _, _ = carry
        st, m = algo.step(st, rng.step_key(steps_key, st.iteration), real)
        st = st.replace(iteration=st.iteration + 1)
        ok, peak = healthy(algo, st, m["loss"], max_abs)
        sums = {k: sums[k] + jnp.asarray(m[k], jnp.float32) for k in sums}
        return st, sums, n + 1, ok, peak

    init = (state, zeros, jnp.int32(0), jnp.bool_(True), jnp.float32(0))
    state, sums, n, ok, peak = jax.lax.while_loop(cond, body, init)
    mean = {k: v / jnp.maximum(n, 1).astype(jnp.float32) for k, v in sums.items()}
    return state, Progress(mean, n, ok, peak)


def distill(algo: common.Algorithm, key: jax.Array, real: common.RealData,
            iterations: int) -> tuple[common.Synthetic, Progress]:
    """Distil from scratch: init from ``rng.stream(key, 'init')``, ``iterations`` steps
    from ``rng.stream(key, 'steps')``; pure (jit / vmap over ``key`` and ``real``).

    Args:
      algo: the algorithm (``gold.distill.registry.build``).
      key: the run's root key (``gold.rng.root(seed)``).
      real: the selected real data.
      iterations: number of steps.

    Returns:
      (the synthetic set, :class:`Progress` of all steps; check ``healthy``).
    """
    state = algo.init(rng.stream(key, "init"), real)
    state, progress = advance(algo, state, rng.stream(key, "steps"), real, iterations)
    return algo.synthetic(state), progress


__all__ = ["Progress", "advance", "distill", "healthy"]
