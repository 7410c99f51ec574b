"""Build notebooks/*.ipynb from the cell sources below (the single source of the notebooks).

    python notebooks/build_notebooks.py            # write the notebooks without outputs
    python notebooks/build_notebooks.py --execute  # ... then run them here and store outputs

``--execute`` runs every notebook top to bottom with nbclient in ``notebooks/`` (their run
folders ``notebooks/*_runs/`` are git-ignored) and writes the executed notebook, so a
reader sees the plots and tables without running anything. ``tests/test_notebooks.py``
checks that the committed cells match this file and executes the notebooks.

The install cell's repository URL is copied from ``gold/_meta.py`` (``REPOSITORY_URL``).
"""

from __future__ import annotations

import argparse
import os
import runpy
import time

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REPOSITORY_URL = runpy.run_path(os.path.join(ROOT, "gold", "_meta.py"))["REPOSITORY_URL"]
NAMES = ("quickstart.ipynb", "critical_samples.ipynb")

INSTALL = '''# Install gold where it is missing: from the checkout this notebook sits in, else from a
# fresh clone of the repository (e.g. on Colab). Nothing to do in the project's own venv.
import importlib
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY_URL = "%s"  # set once in gold/_meta.py
try:
    import gold.configs
except ImportError:
    src = next((p for p in [Path.cwd(), *Path.cwd().parents]
                if (p / "setup.py").is_file() and (p / "gold" / "__init__.py").is_file()), None)
    if src is None:
        src = Path("gold-src").resolve()
        if not src.exists():
            subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORY_URL, str(src)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(src)], check=True)
    for name in [m for m in sys.modules if m == "gold" or m.startswith("gold.")]:
        del sys.modules[name]  # a failed import may have left a partial package behind
    importlib.invalidate_caches()
    import gold.configs
print("gold", gold.__version__)''' % REPOSITORY_URL

SETUP = '''%matplotlib inline
import hashlib
import json

import jax
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display


def run_dir(name, config):
    """WORKDIR/<name>-<hash of config>: every setting gets its own folder, so changing a
    parameter and rerunning starts a fresh run, and an unchanged one finds its results."""
    digest = hashlib.sha1(config.to_json(sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join(WORKDIR, f"{name}-{digest}")'''

METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}, "colab": {"provenance": []}}


def quickstart() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# gold quickstart: utility -> selection -> distillation\n\n"
            "*Distill Gold from Massive Ores* (data-efficient dataset distillation): score every "
            "real sample by its **utility** (here the loss indicator: small loss = high utility), "
            "keep only the most useful fraction of every class, distil from it, and compare with "
            "a random subset of the same size and with the full data.\n\n"
            "Every setting comes from the project's configs (`gold.configs.<name>.get_config(dataset)`, "
            "the same as `launch/*.py --config=configs/<name>.py:<dataset>`); the notebook changes "
            "only the selection. On scikit-learn's 8x8 digits (shipped, no download) it runs in "
            "a few minutes on a CPU."),
        new_code_cell(INSTALL),
        new_code_cell(
            "# Parameters: change any of them and rerun; each setting gets its own run folder.\n"
            "DATASET = \"digits\"     # scikit-learn's 8x8 digits (embedded, no download)\n"
            "ALGORITHM = \"dm\"       # distillation config gold.configs.<ALGORITHM>: dc, dsa, dm\n"
            "INDICATOR = \"loss\"     # utility indicator (gold.utility): loss, el2n, forgetting, ...\n"
            "RATIO = 0.1            # kept fraction of every class\n"
            "WORKDIR = os.path.abspath(\"quickstart_runs\")",
            metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_markdown_cell("## 1. Data\nNormalised float32 NHWC arrays, int labels, stable sample ids."),
        new_code_cell(
            "from gold import data as gdata\n"
            "ds = gdata.load_dataset(DATASET)\n"
            "print(ds.name, ds.x_train.shape, ds.x_test.shape, ds.num_classes, \"classes\")"),
        new_markdown_cell(
            "## 2. Utility\nTrain a few classifiers from scratch at once (vmapped), average every "
            "sample's loss curve, smooth it, and take minus the final loss as the utility "
            "(paper 4.2). The settings are the dataset's defaults from `gold.configs.utility`."),
        new_code_cell(
            "from gold.configs import utility as utility_config\n"
            "from gold.utility import compute_utility, load_utility, save_utility\n"
            "ucfg = utility_config.get_config(DATASET)\n"
            "ucfg.indicator = INDICATOR\n"
            "print(f\"{INDICATOR}: {ucfg.trials} trials x {ucfg.epochs} epochs, {ucfg.optimizer} lr {ucfg.lr}, \"\n"
            "      f\"ConvNet width {ucfg.model.width} depth {ucfg.model.depth}\")\n"
            "upath = os.path.join(run_dir(f\"utility_{INDICATOR}\", ucfg), \"utility.npz\")\n"
            "if os.path.exists(upath):\n"
            "    u = load_utility(upath)\n"
            "else:\n"
            "    u = compute_utility(INDICATOR, ds, ucfg, jax.random.key(ucfg.seed), log=None)\n"
            "    os.makedirs(os.path.dirname(upath), exist_ok=True)\n"
            "    save_utility(upath, u)\n"
            "    print(f\"{u.num_samples} scores in {u.seconds:.1f}s\")\n"
            "order = np.argsort(u.scores)\n"
            "fig, axes = plt.subplots(2, 10, figsize=(8, 2.2))\n"
            "for j, (row, idx) in enumerate([(\"lowest utility\", order[:10]), (\"highest utility\", order[-10:])]):\n"
            "    for a, i in zip(axes[j], idx):\n"
            "        a.imshow(ds.x_train[i, :, :, 0], cmap=\"gray\"); a.set_title(int(ds.y_train[i]), fontsize=8); a.axis(\"off\")\n"
            "    axes[j, 0].text(-1.5, 3.5, row, fontsize=8, ha=\"right\", va=\"center\")\n"
            "plt.show()"),
        new_markdown_cell(
            "## 3. Selection\nGreedy: the top `RATIO` of every class by utility; random: the same "
            "count per class drawn uniformly."),
        new_code_cell(
            "from gold.selection import select\n"
            "keep_greedy = select(None, ds.y_train, ds.num_classes, policy=\"greedy\", ratio=RATIO, scores=u.scores)\n"
            "keep_random = select(jax.random.key(1), ds.y_train, ds.num_classes, policy=\"random\", ratio=RATIO)\n"
            "print(f\"{len(keep_greedy)} of {len(ds.y_train)} samples kept by {INDICATOR}, {len(keep_random)} by random\")"),
        new_markdown_cell(
            "## 4. Distillation from each subset\n`gold.distill.run(config, workdir)` is what "
            "`launch/distill.py` calls; each run writes `result.json`, `synthetic.npz` and "
            "`synthetic.png` into its folder. A finished run is read back instead of rerun."),
        new_code_cell(
            "import importlib\n"
            "from gold.distill import load_synthetic, run as distill\n"
            "algorithm_config = importlib.import_module(f\"gold.configs.{ALGORITHM}\")\n"
            "\n"
            "def config(indicator, ratio):\n"
            "    c = algorithm_config.get_config(DATASET)  # the configured settings for DATASET\n"
            "    c.selection.indicator, c.selection.ratio = indicator, ratio\n"
            "    c.selection.utility_path = upath if indicator == INDICATOR else \"\"\n"
            "    return c\n"
            "\n"
            "def distill_once(name, c):\n"
            "    workdir = run_dir(name, c)\n"
            "    done = os.path.join(workdir, \"result.json\")\n"
            "    if os.path.exists(done):\n"
            "        with open(done) as f:\n"
            "            return json.load(f) | {\"workdir\": workdir}\n"
            "    return distill(c, workdir) | {\"workdir\": workdir}\n"
            "\n"
            "c = config(\"none\", 1.0)\n"
            "print(f\"{ALGORITHM} IPC {c.ipc}: {c.iterations} iterations, lr_img {c.lr_img}, init {c.init}, \"\n"
            "      f\"ConvNet width {c.model.width} depth {c.model.depth}; evaluation: {c.eval.num_models} models x \"\n"
            "      f\"{c.eval.epochs} epochs, augment {c.eval.augment}\")\n"
            "runs = {f\"{INDICATOR} {RATIO:.0%}\": config(INDICATOR, RATIO),\n"
            "        f\"random {RATIO:.0%}\": config(\"random\", RATIO),\n"
            "        \"full data\": config(\"none\", 1.0)}\n"
            "results = {name: distill_once(name.replace(\" \", \"_\").replace(\"%\", \"\"), c) for name, c in runs.items()}"),
        new_code_cell(
            "display(Markdown(\"| subset | real images | test accuracy (%) |\\n|---|---|---|\\n\" + \"\\n\".join(\n"
            "    f\"| {n} | {r['num_real']} | {r['accuracy_mean']:.2f} +- {r['accuracy_std']:.2f} |\" for n, r in results.items())))\n"
            "fig, axes = plt.subplots(len(results), 10, figsize=(8, 1.0 * len(results) + 0.4))\n"
            "for row, (name, r) in zip(axes, results.items()):\n"
            "    syn = load_synthetic(os.path.join(r[\"workdir\"], \"synthetic.npz\"))\n"
            "    pix = syn.to_pixels()\n"
            "    for a, img, y in zip(row, pix, syn.y):\n"
            "        a.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=\"gray\"); a.axis(\"off\")\n"
            "        a.set_title(syn.class_names[int(y)], fontsize=7)\n"
            "    row[0].text(-1.5, pix.shape[1] / 2, f\"{name}\\n{r['accuracy_mean']:.1f}%\", fontsize=8, ha=\"right\", va=\"center\")\n"
            "fig.suptitle(f\"{ALGORITHM.upper()} synthetic images (IPC {r['ipc']}) on {DATASET}\", fontsize=9)\n"
            "plt.show()"),
        new_markdown_cell(
            "## Next\n`critical_samples.ipynb` sweeps the kept ratio to find the critical sample "
            "ratio (the smallest kept fraction that matches the full data) and checks that the "
            "indicator orders samples by usefulness; `launch/sweep.py` and `launch/stratify.py` "
            "do the same from the command line."),
    ]
    return new_notebook(cells=cells, metadata=METADATA)


def critical_samples() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# Critical samples: sweep and strata\n\n"
            "1. **Sweep** (paper Fig. 2): distil from kept fractions of the data, random vs loss "
            "selection, and find gamma, the smallest ratio that matches the full data.\n"
            "2. **Strata** (paper Fig. 5 / 6): split each class into strata by loss (S1 = largest "
            "loss = lowest utility), distil each, and look at accuracy and diversity.\n\n"
            "`DATASET = \"digits\"` (default) runs offline on scikit-learn's 8x8 digits with the "
            "configs' settings, about 10 minutes on a 2-core CPU. `DATASET = \"mnist\"` reads MNIST "
            "from `$GOLD_DATA_DIR` (`mnist.npz`, the official IDX files, or a prepared tfds copy) "
            "or downloads the four official files into `DATA_DIR`; it runs a CPU-sized version of "
            "the paper's setting (the run lengths and the real pool shrink, see `OVERRIDES`; the "
            "model and learning rates stay)."),
        new_code_cell(INSTALL),
        new_code_cell(
            "# Parameters: change any of them and rerun; each setting gets its own run folder.\n"
            "DATASET = \"digits\"     # \"digits\" (embedded, offline) or \"mnist\"\n"
            "ALGORITHM = \"dm\"       # distillation config gold.configs.<ALGORITHM>: dc, dsa, dm\n"
            "RATIOS = (0.02, 0.05, 0.1, 0.3)  # kept fractions of every class\n"
            "REPEATS = 2            # runs per ratio (and of the full data)\n"
            "NUM_STRATA = 5\n"
            "DATA_DIR = os.environ.get(\"GOLD_DATA_DIR\") or os.path.abspath(\"data\")  # MNIST is looked for / downloaded here\n"
            "QUICK = os.environ.get(\"GOLD_NOTEBOOK_QUICK\") == \"1\"  # tests: fewer points, iterations, epochs\n"
            "WORKDIR = os.path.abspath(\"critical_runs\")",
            metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_code_cell(
            "from gold import data as gdata\n"
            "MNIST_URL = \"https://storage.googleapis.com/cvdf-datasets/mnist/\"  # a mirror of the official IDX files\n"
            "MNIST_FILES = (\"train-images-idx3-ubyte\", \"train-labels-idx1-ubyte\", \"t10k-images-idx3-ubyte\", \"t10k-labels-idx1-ubyte\")\n"
            "\n"
            "def ensure_mnist(data_dir, url=MNIST_URL):\n"
            "    \"\"\"MNIST from data_dir (mnist.npz, IDX files, tfds), else download the IDX files into data_dir/mnist.\"\"\"\n"
            "    try:\n"
            "        return gdata.load_dataset(\"mnist\", data_dir)\n"
            "    except gdata.DatasetError as err:\n"
            "        print(f\"MNIST not found in {data_dir} ({err}); downloading it from {url}\")\n"
            "    import urllib.request\n"
            "    folder = os.path.join(data_dir, \"mnist\")\n"
            "    os.makedirs(folder, exist_ok=True)\n"
            "    for stem in MNIST_FILES:\n"
            "        urllib.request.urlretrieve(f\"{url}{stem}.gz\", os.path.join(folder, f\"{stem}.gz\"))\n"
            "    return gdata.load_dataset(\"mnist\", data_dir)"),
        new_code_cell(
            "from gold.configs import stratify as stratify_config, sweep as sweep_config\n"
            "from gold.experiments.common import with_overrides\n"
            "\n"
            "OVERRIDES = {}  # dotted field -> value; everything else is the config's setting for DATASET\n"
            "if DATASET == \"mnist\":\n"
            "    ensure_mnist(DATA_DIR)\n"
            "    OVERRIDES.update({\"data.dir\": DATA_DIR, \"data.train_per_class\": 500, \"iterations\": 200,\n"
            "                      \"eval.epochs\": 300, \"eval.num_models\": 2, \"eval.max_test\": 2000,\n"
            "                      \"selection.utility.trials\": 2, \"selection.utility.epochs\": 5})\n"
            "if QUICK:\n"
            "    RATIOS, REPEATS, NUM_STRATA = RATIOS[-2:-1], 1, 2\n"
            "    OVERRIDES.update({\"iterations\": 50, \"eval.num_models\": 2, \"eval.epochs\": 300})\n"
            "\n"
            "def config(module):\n"
            "    return with_overrides(module.get_config(f\"{ALGORITHM},{DATASET}\"), OVERRIDES)\n"
            "\n"
            "c = config(sweep_config)\n"
            "print(f\"{ALGORITHM} IPC {c.ipc} on {DATASET}: {c.iterations} iterations, lr_img {c.lr_img}, \"\n"
            "      f\"ConvNet width {c.model.width} depth {c.model.depth}; evaluation {c.eval.num_models} models x \"\n"
            "      f\"{c.eval.epochs} epochs; loss utility {c.selection.utility.trials} trials x {c.selection.utility.epochs} epochs\")\n"
            "print(\"changed from the config:\", OVERRIDES or \"nothing\")"),
        new_markdown_cell(
            "## 1. Sweep: random vs loss selection\nEvery point is one distillation from the kept "
            "subset; gamma is the smallest ratio whose mean accuracy is at least the full data's "
            "mean minus its standard deviation."),
        new_code_cell(
            "from gold.experiments import sweep\n"
            "sweeps, sweep_dirs = {}, {}\n"
            "for policy in (\"random\", \"loss\"):\n"
            "    c = config(sweep_config)\n"
            "    c.ratios, c.repeats, c.selection.indicator = tuple(RATIOS), REPEATS, policy\n"
            "    sweep_dirs[policy] = run_dir(f\"sweep_{policy}\", c)\n"
            "    sweeps[policy] = sweep.run(c, sweep_dirs[policy])\n"
            "out = sweep.compare(list(sweep_dirs.values()), os.path.join(WORKDIR, \"sweep_compare.png\"), labels=list(sweep_dirs))\n"
            "print(\"gamma:\", out[\"gammas\"])\n"
            "display(Image(out[\"path\"]))\n"
            "display(Markdown(\"\\n\\n\".join(f\"**{p}**\\n\\n\" + sweep.markdown(r) for p, r in sweeps.items())))"),
        new_markdown_cell("## 2. Loss strata: accuracy and diversity per stratum"),
        new_code_cell(
            "from gold.experiments import stratify\n"
            "c = config(stratify_config)\n"
            "c.selection.indicator, c.selection.num_strata = \"loss\", NUM_STRATA\n"
            "shared = os.path.join(sweep_dirs[\"loss\"], \"utility\", \"utility_loss.npz\")  # computed by the sweep\n"
            "c.selection.utility_path = shared if os.path.exists(shared) else \"\"\n"
            "strata_dir = run_dir(\"strata_loss\", c)\n"
            "strata = stratify.run(c, strata_dir)\n"
            "display(Image(os.path.join(strata_dir, \"strata.png\")))\n"
            "display(Markdown(stratify.markdown(strata)))"),
    ]
    return new_notebook(cells=cells, metadata=METADATA)


BUILDERS = {"quickstart.ipynb": quickstart, "critical_samples.ipynb": critical_samples}


def execute(nb: nbformat.NotebookNode, cwd: str, timeout: int = 3600) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in ``cwd`` (raises on the first failing cell)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": cwd}}).execute()
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="run the notebooks and store their outputs")
    parser.add_argument("names", nargs="*", default=list(NAMES), help="notebooks to build")
    args = parser.parse_args()
    for name in args.names:
        nb = BUILDERS[name]()
        nbformat.validate(nb)
        if args.execute:
            start = time.time()
            execute(nb, HERE)
            print(f"executed {name} in {time.time() - start:.0f}s")
        path = os.path.join(HERE, name)
        nbformat.write(nb, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
