"""Distil a dataset: python launch/distill.py --config=configs/dc.py:mnist --workdir=DIR

Any config field can be overridden, e.g. `--config.ipc=10 --config.selection.indicator=loss
--config.selection.ratio=0.05`. Writes config.json, selection.npz, checkpoints/,
metrics.csv, result.json, synthetic.npz and synthetic.png into --workdir; rerunning with
the same --workdir resumes from the newest checkpoint.

`--config.class_groups=G` (DM) distils G disjoint class groups one after another in
DIR/group_<g>/ (each resumable) and merges them into DIR/synthetic.npz
(gold.distill.class_split). Several devices: `--config.mesh.class=N` / `mesh.model=N`
(gold.parallel). Several hosts: the same command on every host with
JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID set; process 0
writes the files.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli
from gold import parallel


def main(config, workdir: str) -> None:
    parallel.initialize_distributed()  # a multi-host run when JAX_COORDINATOR_ADDRESS is set
    from gold.distill import class_split, loop

    run = class_split.run if int(config.get("class_groups", 0) or 0) else loop.run
    result = run(config, workdir)
    print(f"accuracy={result['accuracy_mean']:.2f}+-{result['accuracy_std']:.2f}% "
          f"num_real={result['num_real']} seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__)
