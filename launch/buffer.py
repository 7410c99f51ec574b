"""Train MTT expert trajectories: python launch/buffer.py --config=configs/buffer.py:cifar10 --workdir=DIR

Fields `num_experts`, `epochs` (and every other `configs/buffer.py` field) can be
overridden, e.g. `--config.num_experts=10 --config.selection.indicator=loss
--config.selection.ratio=0.2`. Writes manifest.json, experts_*.npz, selection.npz,
config.json, metrics.csv and result.json into --workdir; rerunning with the same
--workdir trains only the missing experts. Distil with `configs/mtt.py` and
`--config.buffer_dir=DIR`.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.distill.buffer import run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    print(f"buffer {result['buffer_dir']}: {result['num_experts']} experts x {result['epochs']} epochs, "
          f"expert test accuracy {result['test_accuracy_mean']:.2f}+-{result['test_accuracy_std']:.2f}%, "
          f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.BUFFER)
