"""Distil a dataset: python launch/distill.py --config=configs/dc.py:mnist --workdir=DIR

Any config field can be overridden, e.g. `--config.ipc=10 --config.selection.indicator=loss
--config.selection.ratio=0.05`. Writes config.json, selection.npz, checkpoints/,
metrics.csv, result.json, synthetic.npz and synthetic.png into --workdir; rerunning with
the same --workdir resumes from the newest checkpoint.
"""

import _setup  # noqa: F401  (puts the repo root on sys.path for `configs`)
from absl import app, flags, logging
from ml_collections import config_flags

from gold.distill.loop import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out of the log
    result = run(_CONFIG.value, _WORKDIR.value)
    print(f"accuracy={result['accuracy_mean']:.2f}+-{result['accuracy_std']:.2f}% "
          f"num_real={result['num_real']} seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
