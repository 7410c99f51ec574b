"""Train a classifier: python launch/train.py --config=configs/train.py:mnist --workdir=DIR"""

import _setup  # puts the repo root on sys.path for `configs`
from absl import app

from gold.train import train_and_evaluate

_CONFIG, _WORKDIR = _setup.config_and_workdir_flags(
    "Path to a configs/*.py file.", "Directory for config.json, metrics and result.json.")


def main(argv):
    del argv
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(f"test_accuracy={result['test_accuracy']:.2f}% seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
