"""Cross-architecture evaluation: python launch/evaluate.py --config=configs/evaluate.py --workdir=DIR \
    --config.synthetic=RUN_A,RUN_B

Trains fresh networks of every architecture of --config.models on each saved synthetic
set and writes result.json, table.csv, table.md and cross_arch.png (finished cells are
cached under cells/ and reused on a rerun). See configs/evaluate.py.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.experiments.cross_arch import markdown, run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    print(markdown(result))
    print(f"seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.EVALUATE)
