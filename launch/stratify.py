"""Stratified analysis: python launch/stratify.py --config=configs/stratify.py:dc,mnist --workdir=DIR

Splits every class into `--config.selection.num_strata` strata by
`--config.selection.indicator` (S1 = lowest utility), distils each, and writes
config.json, result.json (strata: accuracy, diversity, outliers), strata.csv, strata.md,
strata.png and one sub-run per stratum under points/ (finished ones are skipped on a
rerun). See configs/stratify.py for a CPU-size command and the fields.
"""

import _setup  # puts the repo root on sys.path for `configs`
from absl import app

from gold.experiments.stratify import run

_CONFIG, _WORKDIR = _setup.config_and_workdir_flags(
    "Path to configs/stratify.py[:<algo>,<dataset>].", "Experiment directory (resumable).")


def main(argv):
    del argv
    result = run(_CONFIG.value, _WORKDIR.value)
    for row in result["strata"]:
        div = row.get("diversity")
        print(f"S{row['stratum']}: {row['accuracy_mean']:.2f}+-{row['accuracy_std']:.2f}"
              + ("" if div is None else f" diversity={div:.3f} outliers={row.get('outliers')}"))
    print(f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    app.run(main)
