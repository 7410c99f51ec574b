"""The notebooks: built from notebooks/build_notebooks.py, committed with their executed
outputs, runnable top to bottom with the configs' settings and above-chance accuracy,
and an install cell that works without editing."""

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import gold
from gold import _meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "critical_samples.ipynb")
CHANCE = 10.0  # percent, 10 classes (digits)
# The notebooks train real networks as a user would: the user's XLA flags, not the
# suite's cheap code generation (conftest.py).
USER_XLA_FLAGS = os.environ.get("GOLD_TEST_USER_XLA_FLAGS", "")


def _build_module():
    spec = importlib.util.spec_from_file_location("build_nb", os.path.join(ROOT, "notebooks", "build_notebooks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


def _code(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _execute(nb, cwd, env):
    """Run ``nb`` in ``cwd`` with extra environment ``env``; returns the error outputs."""
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}},
                            allow_errors=True)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return [f"{o.ename}: {o.evalue}" for c in _code(nb) for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def _last_json(nb):
    """The JSON printed by the last code cell."""
    text = "".join(o.get("text", "") for o in _code(nb)[-1].get("outputs", []) if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------ committed notebooks
def test_committed_cells_match_the_build_script():
    mod = _build_module()
    for name in NOTEBOOKS:
        got = mod.BUILDERS[name]()
        nbformat.validate(got)
        assert [c.source for c in got.cells] == [c.source for c in _read(name).cells], (
            f"{name} differs from notebooks/build_notebooks.py; run "
            f"`python notebooks/build_notebooks.py --execute`")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_stores_its_executed_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = _code(nb)
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not executed top to bottom in one run: {counts}"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{name}: expected its plots among the stored outputs"
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_clones_the_one_repository_url(name):
    first = _code(_read(name))[0].source
    assert f'REPOSITORY_URL = "{_meta.REPOSITORY_URL}"' in first
    assert "OWNER" not in first


INSTALL_HARNESS = textwrap.dedent("""
    import json, subprocess, sys
    calls = []
    subprocess.run = lambda cmd, check=False: calls.append([str(c) for c in cmd])
    sys.modules["gold.configs"] = None  # gold is "not installed": `import gold.configs` fails
    exec(open(sys.argv[1]).read())
    print(json.dumps(calls))
""")


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_install_cell_installs_from_the_checkout_else_from_a_clone(where, tmp_path):
    """The install cell, with gold missing: pip-installs the checkout the notebook sits
    in; outside a checkout (Colab) clones REPOSITORY_URL first. Commands are recorded, not run."""
    cell = tmp_path / "install.py"
    cell.write_text(_code(_read("quickstart.ipynb"))[0].source)
    harness = tmp_path / "harness.py"
    harness.write_text(INSTALL_HARNESS)
    cwd = os.path.join(ROOT, "notebooks") if where == "checkout" else str(tmp_path)
    out = subprocess.run([sys.executable, str(harness), str(cell)], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    calls = json.loads(out.stdout.strip().splitlines()[-1])
    assert f"gold {gold.__version__}" in out.stdout
    if where == "checkout":
        assert calls == [[sys.executable, "-m", "pip", "install", "-q", ROOT]]
    else:
        src = str((tmp_path / "gold-src").resolve())
        assert calls == [["git", "clone", "-q", "--depth", "1", _meta.REPOSITORY_URL, src],
                         [sys.executable, "-m", "pip", "install", "-q", src]]


# ------------------------------------------------------------------ execution
def test_quickstart_runs_with_the_config_settings_above_chance(tmp_path):
    """The quickstart exactly as a user runs it (digits, the configs' settings), plus a
    check cell: every subset's accuracy well above chance, the model the configs pick
    for 8x8 images (ConvNetD1), and a fresh run folder per setting."""
    nb = _read("quickstart.ipynb")
    for c in _code(nb):
        c.outputs, c.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent("""
        from gold.configs import common
        c = config(INDICATOR, RATIO)
        same, other = run_dir("x", config(INDICATOR, RATIO)), run_dir("x", config(INDICATOR, RATIO / 2))
        again = distill_once("full_data", config("none", 1.0))
        print(json.dumps({"acc": {n: r["accuracy_mean"] for n, r in results.items()},
                          "num_real": {n: r["num_real"] for n, r in results.items()},
                          "depth": c.model.depth, "config_depth": common.convnet_depth(DATASET),
                          "same_dir": same == run_dir("x", c), "new_dir": other != same,
                          "cached": again["accuracy_mean"] == results["full data"]["accuracy_mean"]}))
    """)))
    errors = _execute(nb, tmp_path, {"GOLD_DATA_DIR": "", "XLA_FLAGS": USER_XLA_FLAGS})
    assert not errors, errors
    out = _last_json(nb)
    assert out["depth"] == out["config_depth"] == 1
    assert set(out["acc"]) == {"loss 10%", "random 10%", "full data"}
    for name, acc in out["acc"].items():
        assert acc > 5 * CHANCE, f"{name}: {acc:.1f}% is near chance ({CHANCE}%)"
    assert out["num_real"]["loss 10%"] == out["num_real"]["random 10%"] < out["num_real"]["full data"]
    assert out["same_dir"] and out["new_dir"] and out["cached"]


def test_critical_samples_quick_mode_above_chance(tmp_path):
    """critical_samples on digits (offline) with GOLD_NOTEBOOK_QUICK=1: one ratio, one
    repeat, two strata, 50 iterations; model, learning rates and data as configured."""
    nb = _read("critical_samples.ipynb")
    for c in _code(nb):
        c.outputs, c.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent("""
        ref = sweep_config.get_config(f"{ALGORITHM},{DATASET}")
        print(json.dumps({"full": {p: r["full"]["accuracy_mean"] for p, r in sweeps.items()},
                          "rows": {p: [row["accuracy_mean"] for row in r["rows"]] for p, r in sweeps.items()},
                          "strata": [s["accuracy_mean"] for s in strata["strata"]],
                          "overrides": sorted(OVERRIDES),
                          "model": [c.model.to_dict(), ref.model.to_dict()],
                          "lr": [c.lr_img, ref.lr_img]}))
    """)))
    errors = _execute(nb, tmp_path, {"GOLD_NOTEBOOK_QUICK": "1", "GOLD_DATA_DIR": "", "XLA_FLAGS": USER_XLA_FLAGS})
    assert not errors, errors
    out = _last_json(nb)
    assert out["overrides"] == ["eval.epochs", "eval.num_models", "iterations"]
    assert out["model"][0] == out["model"][1] and out["lr"][0] == out["lr"][1]
    for policy in ("random", "loss"):
        assert out["full"][policy] > 5 * CHANCE, out
        assert len(out["rows"][policy]) == 1 and out["rows"][policy][0] > 5 * CHANCE, out
    assert len(out["strata"]) == 2 and all(a > 3 * CHANCE for a in out["strata"]), out


def _write_idx(path, array):
    """An IDX file of unsigned bytes (gzipped), as published on the MNIST page."""
    magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def test_critical_samples_mnist_download_path(tmp_path, gold_data_dir, monkeypatch):
    """``ensure_mnist`` (the notebook's MNIST path) with an empty data dir downloads the
    four official IDX files (here from a local file:// mirror built from the shared
    MNIST) and loads them."""
    with np.load(gold_data_dir / "mnist.npz") as f:
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for stem, key in (("train-images-idx3-ubyte", "x_train"), ("train-labels-idx1-ubyte", "y_train"),
                      ("t10k-images-idx3-ubyte", "x_test"), ("t10k-labels-idx1-ubyte", "y_test")):
        a = arrays[key]
        _write_idx(mirror / f"{stem}.gz", a.reshape(a.shape[:3]) if a.ndim == 4 else a)
    monkeypatch.setenv("GOLD_CACHE_DIR", str(tmp_path / "cache"))
    cell = next(c.source for c in _code(_read("critical_samples.ipynb")) if "def ensure_mnist" in c.source)
    scope = {"os": os}
    exec(cell, scope)
    data_dir = tmp_path / "data"
    ds = scope["ensure_mnist"](str(data_dir), url=mirror.as_uri() + "/")
    assert sorted(os.listdir(data_dir / "mnist")) == sorted(f"{s}.gz" for s in scope["MNIST_FILES"])
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
