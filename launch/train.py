"""Train a classifier: python launch/train.py --config=configs/train.py:mnist --workdir=DIR

Writes config.json, metrics.csv (+ TensorBoard events), checkpoints/ and result.json
into --workdir; rerunning with the same --workdir resumes from the newest epoch
checkpoint, and a workdir holding another config is refused.
`--config=configs/train.py:digits,runlocal` is a seconds-long CPU run; `--show_config`
lists the fields.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.train import train_and_evaluate


def main(config, workdir: str) -> None:
    result = train_and_evaluate(config, workdir)
    print(f"test_accuracy={result['test_accuracy']:.2f}% seconds={result['seconds']:.1f}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.TRAIN)
