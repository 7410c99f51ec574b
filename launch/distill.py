"""Distil a dataset: python launch/distill.py --config=configs/dc.py:mnist --workdir=DIR

Any config field can be overridden, e.g. `--config.ipc=10 --config.selection.indicator=loss
--config.selection.ratio=0.05`. Writes config.json, selection.npz, checkpoints/,
metrics.csv, result.json, synthetic.npz and synthetic.png into --workdir; rerunning with
the same --workdir resumes from the newest checkpoint.
"""

import _setup  # puts the repo root on sys.path for `configs`
from absl import app, logging

from gold.distill.loop import run

_CONFIG, _WORKDIR = _setup.config_and_workdir_flags(
    "Path to a configs/*.py file.", "Directory for checkpoints and results.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the log
    result = run(_CONFIG.value, _WORKDIR.value)
    print(f"accuracy={result['accuracy_mean']:.2f}+-{result['accuracy_std']:.2f}% "
          f"num_real={result['num_real']} seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
