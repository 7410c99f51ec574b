"""Orbax checkpoints of arbitrary pytrees, saved every N steps, resumed exactly.

PRNG keys must be stored as raw ``uint32`` key data (``jax.random.key_data``);
everything else is a pytree of arrays and Python scalars.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Save / restore a pytree under ``directory/<step>``, keeping the newest few.

    Saves block until written (``wait_until_finished``), so a run killed right after
    ``save`` returns resumes from that step.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> Optional[int]:
        """The newest complete checkpoint's step, or None when there is none."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` (a pytree) as checkpoint ``step`` and wait until it is on disk."""
        state = jax.tree.map(np.asarray, state)
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like: Any) -> Any:
        """Read checkpoint ``step`` into a pytree with the structure and dtypes of ``like``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.tree.map(np.asarray, like))
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        """Release the manager's background resources."""
        self._manager.close()
