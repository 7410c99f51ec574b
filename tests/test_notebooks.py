"""The notebooks are valid nbformat 4 without outputs and run top to bottom (tiny size)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "critical_samples.ipynb")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_clean_nbformat4(name):
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "google.colab" in code[0].source  # first cell: the Colab-only install
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


def test_build_script_reproduces_committed_notebooks(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_nb", os.path.join(ROOT, "notebooks", "build_notebooks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, make in (("quickstart.ipynb", mod.quickstart), ("critical_samples.ipynb", mod.critical_samples)):
        want = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
        got = make()
        assert [c.source for c in got.cells] == [c.source for c in want.cells], name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_tiny(name, tmp_path, monkeypatch, gold_data_dir):
    monkeypatch.setenv("GOLD_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("GOLD_REPO_ROOT", ROOT)
    monkeypatch.setenv("GOLD_DATA_DIR", str(gold_data_dir))
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
