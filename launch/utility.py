"""Score every training sample: python launch/utility.py --config=configs/utility.py:mnist --workdir=DIR"""

import _setup  # noqa: F401  (puts the repo root on sys.path for `configs`)
from absl import app, flags
from ml_collections import config_flags

from gold.utility import run

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for config.json, utility.npz and result.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    result = run(_CONFIG.value, _WORKDIR.value)
    print(f"indicator={result['indicator']} num_samples={result['num_samples']} "
          f"seconds={result['seconds']:.1f} -> {result['utility_path']}")


if __name__ == "__main__":
    app.run(main)
