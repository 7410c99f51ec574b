"""Distil a dataset: python launch/distill.py --config=configs/dc.py:mnist --workdir=DIR

Any config field can be overridden, e.g. `--config.ipc=10 --config.selection.indicator=loss
--config.selection.ratio=0.05`. Writes config.json, selection.npz, checkpoints/,
metrics.csv, result.json, synthetic.npz and synthetic.png into --workdir; rerunning with
the same --workdir resumes from the newest checkpoint.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli
from gold.distill.loop import run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    print(f"accuracy={result['accuracy_mean']:.2f}+-{result['accuracy_std']:.2f}% "
          f"num_real={result['num_real']} seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__)
