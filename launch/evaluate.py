"""Cross-architecture evaluation: python launch/evaluate.py --config=configs/evaluate.py --workdir=DIR \
    --config.synthetic=RUN_A,RUN_B

Trains fresh networks of every architecture of --config.models on each saved synthetic
set and writes result.json, table.csv, table.md and cross_arch.png (finished cells are
cached under cells/ and reused on a rerun). See configs/evaluate.py.
"""

import _setup  # puts the repo root on sys.path for `configs`
from absl import app

from gold.experiments.cross_arch import markdown, run

_CONFIG, _WORKDIR = _setup.config_and_workdir_flags(
    "Path to configs/evaluate.py.", "Output directory.")


def main(argv):
    del argv
    result = run(_CONFIG.value, _WORKDIR.value)
    print(markdown(result))
    print(f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
