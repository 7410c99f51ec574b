"""Stratified analysis: python launch/stratify.py --config=configs/stratify.py:dc,mnist --workdir=DIR

Splits every class into `--config.selection.num_strata` strata by
`--config.selection.indicator` (S1 = lowest utility), distils each, and writes
config.json, result.json (strata: accuracy, diversity, outliers), strata.csv, strata.md,
strata.png and one sub-run per stratum under points/ (finished ones are skipped on a
rerun). See configs/stratify.py for a CPU-size command and the fields.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.experiments.stratify import run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    for row in result["strata"]:
        div = row.get("diversity")
        print(f"S{row['stratum']}: {row['accuracy_mean']:.2f}+-{row['accuracy_std']:.2f}"
              + ("" if div is None else f" diversity={div:.3f} outliers={row.get('outliers')}"))
    print(f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.STRATIFY)
