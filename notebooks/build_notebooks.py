"""Build notebooks/*.ipynb from the cell sources below (nbformat 4, no outputs).

Run after editing: ``python notebooks/build_notebooks.py``. The notebooks are executed
top to bottom in CI by ``tests/test_notebooks.py`` with ``GOLD_NOTEBOOK_TINY=1``.
"""

from __future__ import annotations

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

COLAB = '''# Colab: fetch and install gold (runs only on Colab; locally the checkout is used).
import sys
IN_COLAB = "google.colab" in sys.modules
GOLD_REPO = "https://github.com/OWNER/gold.git"  # set to where gold is hosted
if IN_COLAB:
    !git clone -q {GOLD_REPO} /content/gold
    !pip install -q -e /content/gold
    sys.path.insert(0, "/content/gold")'''

SETUP = '''# Find the repository root (for `configs/`) and make plots inline.
import os
import sys
from pathlib import Path

ROOT = (Path(os.environ["GOLD_REPO_ROOT"]) if "GOLD_REPO_ROOT" in os.environ else
        next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "configs" / "dc.py").exists()),
             Path("/content/gold")))
sys.path.insert(0, str(ROOT))
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import jax
from IPython.display import Image, Markdown, display'''


def quickstart() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# gold quickstart: utility -> selection -> distillation\n\n"
            "*Distill Gold from Massive Ores* (data-efficient dataset distillation): score every "
            "real sample by its **utility** (here: the loss indicator, small loss = high utility), "
            "keep only the most useful fraction, distil from it, and compare with a random subset "
            "of the same size. Runs on a CPU with scikit-learn's 8x8 digits (shipped, no download).\n\n"
            "Set `GOLD_NOTEBOOK_TINY=1` for a smoke-test-sized run (CI)."),
        new_code_cell(COLAB),
        new_code_cell(
            "# Parameters (tiny = CI smoke test; otherwise a few minutes on a laptop CPU).\n"
            "import os\n"
            "TINY = os.environ.get('GOLD_NOTEBOOK_TINY', '0') == '1'\n"
            "RATIO = 0.1              # kept fraction of the real data\n"
            "UTILITY_TRIALS, UTILITY_EPOCHS = (1, 2) if TINY else (5, 15)\n"
            "ITERATIONS = 2 if TINY else 200          # DC iterations\n"
            "EVAL_EPOCHS = 3 if TINY else 300         # evaluation epochs\n"
            "WIDTH, DEPTH = (4, 1) if TINY else (32, 3)  # ConvNet width / depth\n"
            "WORKDIR = os.path.abspath('quickstart_runs')",
            metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_markdown_cell("## 1. Data\nNormalised float32 NHWC arrays, labels, ids."),
        new_code_cell(
            "from gold import data as gdata\n"
            "ds = gdata.load_dataset('digits')\n"
            "print(ds.name, ds.x_train.shape, ds.x_test.shape, ds.num_classes, 'classes')"),
        new_markdown_cell(
            "## 2. Utility: the loss indicator\nTrain a few classifiers from scratch (vmapped), "
            "average every sample's loss curve, smooth it, and take minus the final loss as the "
            "utility (paper 4.2)."),
        new_code_cell(
            "import ml_collections\n"
            "from gold.utility import compute_utility\n"
            "ucfg = ml_collections.ConfigDict({'trials': UTILITY_TRIALS, 'epochs': UTILITY_EPOCHS,\n"
            "    'model': {'name': 'convnet', 'width': WIDTH, 'depth': DEPTH, 'norm': 'instancenorm'}})\n"
            "u = compute_utility('loss', ds, ucfg, jax.random.key(0), log=None)\n"
            "print(f'{u.num_samples} scores in {u.seconds:.1f}s')\n"
            "order = np.argsort(u.scores)\n"
            "fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))\n"
            "for j, (row, idx) in enumerate([('lowest utility', order[:8]), ('highest utility', order[-8:])]):\n"
            "    for a, i in zip(axes[j], idx):\n"
            "        a.imshow(ds.x_train[i, :, :, 0], cmap='gray'); a.set_title(int(ds.y_train[i]), fontsize=8); a.axis('off')\n"
            "    axes[j, 0].text(-12, 4, row, fontsize=8, ha='right')\n"
            "plt.show()"),
        new_markdown_cell(
            "## 3. Selection\nGreedy: the top `RATIO` of every class by utility; random: the same "
            "count per class drawn uniformly."),
        new_code_cell(
            "from gold.selection import select\n"
            "keep_loss = select(None, ds.y_train, ds.num_classes, policy='greedy', ratio=RATIO, scores=u.scores)\n"
            "keep_rand = select(jax.random.key(1), ds.y_train, ds.num_classes, policy='random', ratio=RATIO)\n"
            "print(len(keep_loss), 'samples kept by loss,', len(keep_rand), 'by random')\n"
            "from gold.utility import save_utility\n"
            "upath = save_utility(os.path.join(WORKDIR, 'utility.npz'), u)"),
        new_markdown_cell(
            "## 4. Distillation (DC, IPC 1) from each subset\nThe same `gold.distill.loop.run` that "
            "`launch/distill.py` calls; each run writes `result.json`, `synthetic.npz` and "
            "`synthetic.png` into its workdir."),
        new_code_cell(
            "from gold.configs import dc\n"
            "from gold.distill.loop import run as distill\n"
            "def config(indicator, ratio):\n"
            "    c = dc.get_config('digits')\n"
            "    c.model.width, c.model.depth = WIDTH, DEPTH\n"
            "    c.iterations, c.checkpoint_every = ITERATIONS, 0\n"
            "    c.eval.epochs, c.eval.num_models = EVAL_EPOCHS, 2\n"
            "    c.selection.indicator, c.selection.ratio = indicator, ratio\n"
            "    c.selection.utility_path = upath if indicator == 'loss' else ''\n"
            "    return c\n"
            "results = {}\n"
            "for name, ind, r in [('loss 10%', 'loss', RATIO), ('random 10%', 'random', RATIO), ('full data', 'none', 1.0)]:\n"
            "    results[name] = distill(config(ind, r), os.path.join(WORKDIR, name.replace(' ', '_').replace('%', '')))\n"
            "for name, r in results.items():\n"
            "    print(f\"{name:12s} {r['accuracy_mean']:6.2f} +- {r['accuracy_std']:.2f}  (num_real={r['num_real']}, {r['seconds']:.0f}s)\")"),
        new_code_cell(
            "names = list(results)\n"
            "plt.figure(figsize=(5, 3))\n"
            "plt.bar(names, [results[n]['accuracy_mean'] for n in names], yerr=[results[n]['accuracy_std'] for n in names], capsize=4)\n"
            "plt.ylabel('test accuracy (%)'); plt.title('DC IPC 1 on digits'); plt.show()\n"
            "display(Image(os.path.join(WORKDIR, 'loss_10', 'synthetic.png')))"),
        new_markdown_cell(
            "## Next\n`launch/sweep.py` finds the critical sample ratio (the smallest kept ratio "
            "that matches the full data), `launch/stratify.py` checks that an indicator orders "
            "samples by usefulness: see `critical_samples.ipynb`."),
    ]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "colab": {"provenance": []}})


def critical_samples() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# Critical samples on MNIST: sweep and strata\n\n"
            "1. **Sweep** (paper Fig. 2): distil from kept ratios of the data, random vs loss "
            "selection, and find gamma, the smallest ratio that matches the full data.\n"
            "2. **Strata** (paper Fig. 5 / 6): split each class into strata by loss (S1 = largest "
            "loss = lowest utility), distil each, and look at accuracy and diversity.\n\n"
            "Needs MNIST (`$GOLD_DATA_DIR/mnist.npz` or tfds). Sizes here are CPU-small (a pool of "
            "`PER_CLASS` images per class); `GOLD_NOTEBOOK_TINY=1` shrinks everything for CI."),
        new_code_cell(COLAB),
        new_code_cell(
            "# Parameters\n"
            "import os\n"
            "TINY = os.environ.get('GOLD_NOTEBOOK_TINY', '0') == '1'\n"
            "PER_CLASS = 30 if TINY else 500          # MNIST training images per class in the pool\n"
            "RATIOS = (0.1,) if TINY else (0.01, 0.05, 0.2)\n"
            "REPEATS = 1 if TINY else 2\n"
            "NUM_STRATA = 2 if TINY else 5\n"
            "ITERATIONS = 1 if TINY else 100\n"
            "EVAL_EPOCHS = 3 if TINY else 300\n"
            "WIDTH, DEPTH = (4, 1) if TINY else (32, 3)\n"
            "MAX_TEST = 200 if TINY else 2000\n"
            "WORKDIR = os.path.abspath('critical_runs')",
            metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_code_cell(
            "from gold.configs import stratify as stratify_cfg, sweep as sweep_cfg\n"
            "def shrink(c):\n"
            "    c.data.train_per_class = PER_CLASS\n"
            "    c.model.width, c.model.depth = WIDTH, DEPTH\n"
            "    c.batch_real, c.iterations, c.checkpoint_every = 32, ITERATIONS, 0\n"
            "    c.eval.epochs, c.eval.num_models, c.eval.augment, c.eval.max_test = EVAL_EPOCHS, 2, 'none', MAX_TEST\n"
            "    u = c.selection.utility\n"
            "    u.trials, u.epochs, u.batch_size = (1, 2, 128) if TINY else (2, 5, 256)\n"
            "    u.model.width, u.model.depth = WIDTH, DEPTH\n"
            "    return c"),
        new_markdown_cell("## 1. Sweep: random vs loss selection"),
        new_code_cell(
            "from gold.experiments import sweep\n"
            "sweeps = {}\n"
            "for policy in ('random', 'loss'):\n"
            "    c = shrink(sweep_cfg.get_config('dc,mnist'))\n"
            "    c.ratios, c.repeats, c.selection.indicator = RATIOS, REPEATS, policy\n"
            "    c.analysis.features = 'utility'\n"
            "    sweeps[policy] = sweep.run(c, os.path.join(WORKDIR, f'sweep_{policy}'))\n"
            "out = sweep.compare([os.path.join(WORKDIR, f'sweep_{p}') for p in sweeps],\n"
            "                    os.path.join(WORKDIR, 'sweep_compare.png'), labels=list(sweeps))\n"
            "print('gamma:', out['gammas'])\n"
            "display(Image(out['path']))"),
        new_markdown_cell("## 2. Loss strata: accuracy and diversity per stratum"),
        new_code_cell(
            "from gold.experiments import stratify\n"
            "c = shrink(stratify_cfg.get_config('dc,mnist'))\n"
            "c.selection.indicator, c.selection.num_strata = 'loss', NUM_STRATA\n"
            "c.selection.utility_path = os.path.join(WORKDIR, 'sweep_loss', 'utility', 'utility_loss.npz')\n"
            "strata = stratify.run(c, os.path.join(WORKDIR, 'strata_loss'))\n"
            "display(Image(os.path.join(WORKDIR, 'strata_loss', 'strata.png')))"),
        new_markdown_cell("## 3. Everything as one Markdown report"),
        new_code_cell(
            "from gold.experiments import report\n"
            "display(Markdown(report.render(WORKDIR)))"),
    ]
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "colab": {"provenance": []}})


def main() -> None:
    for name, nb in (("quickstart.ipynb", quickstart()), ("critical_samples.ipynb", critical_samples())):
        nbformat.validate(nb)
        path = os.path.join(HERE, name)
        nbformat.write(nb, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
