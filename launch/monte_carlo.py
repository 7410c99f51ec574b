"""Monte-Carlo utility: python launch/monte_carlo.py --config=configs/monte_carlo.py:dc,mnist --workdir=DIR

Distils K random subsets (many at once, vmapped) and scores every sample by the mean
accuracy of the runs that contained it. Writes utility.npz (use it as
--config.selection.utility_path of any launcher), trials.npz, result.json and the
convergence table / plot; rerunning with the same --workdir skips finished chunks.
See configs/monte_carlo.py for a CPU-size command.
"""

import _setup  # noqa: F401  (repo root on sys.path)

from gold import cli, config_docs
from gold.experiments.monte_carlo import run


def main(config, workdir: str) -> None:
    r = run(config, workdir)
    last = r["convergence"][-1]
    print(f"trials={r['trials']} subset_size={r['subset_size']} seconds_per_trial={r['seconds_per_trial']:.2f} "
          f"spearman@{last['total_trials']}={last['spearman']} utility={r['utility_path']}")


if __name__ == "__main__":
    cli.main(main, __doc__, config_docs.MONTE_CARLO)
