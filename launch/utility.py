"""Score every training sample: python launch/utility.py --config=configs/utility.py:mnist --workdir=DIR"""

import _setup  # puts the repo root on sys.path for `configs`
from absl import app

from gold.utility import run

_CONFIG, _WORKDIR = _setup.config_and_workdir_flags(
    "Path to a configs/*.py file.", "Directory for config.json, utility.npz and result.json.")


def main(argv):
    del argv
    result = run(_CONFIG.value, _WORKDIR.value)
    print(f"indicator={result['indicator']} num_samples={result['num_samples']} "
          f"seconds={result['seconds']:.1f} -> {result['utility_path']}")


if __name__ == "__main__":
    app.run(main)
