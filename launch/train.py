"""Train a classifier: python launch/train.py --config=configs/train.py:mnist --workdir=DIR"""

import _setup  # noqa: F401  (puts the repo root on sys.path for `configs`)
from absl import app, flags
from ml_collections import config_flags

from gold.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, metrics and result.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(f"test_accuracy={result['test_accuracy']:.2f}% seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
