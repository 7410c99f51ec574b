"""Score every training sample: python launch/utility.py --config=configs/utility.py:mnist --workdir=DIR

Writes config.json, metrics.csv (+ TensorBoard events), checkpoints/, utility.npz,
utility.json and result.json into --workdir; rerunning with the same --workdir resumes
from the newest checkpoint, and a workdir holding another config is refused.
`--config=configs/utility.py:digits,runlocal` is a seconds-long CPU run;
`--show_config` lists the fields.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.utility import run


def main(config, workdir: str) -> None:
    result = run(config, workdir)
    print(f"indicator={result['indicator']} num_samples={result['num_samples']} "
          f"seconds={result['seconds']:.1f} -> {result['utility_path']}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.UTILITY)
