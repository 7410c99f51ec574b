"""Critical-sample-ratio sweep: python launch/sweep.py --config=configs/sweep.py:dc,mnist --workdir=DIR

Distils from every kept ratio of `--config.ratios` (`--config.repeats` runs each) and
from the full data, then reports gamma. Writes config.json, result.json (gamma, full,
rows), table.csv, table.md, sweep.png and one sub-run per point under points/; rerunning
with the same --workdir skips the finished points. See configs/sweep.py for a CPU-size
command and the fields.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.experiments.gamma import format_ratio
from gold.experiments.sweep import run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    print(f"gamma={format_ratio(result['gamma'])} found={result['gamma_found']} "
          f"full={result['full']['accuracy_mean']:.2f}+-{result['full']['accuracy_std']:.2f} "
          f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.SWEEP)
