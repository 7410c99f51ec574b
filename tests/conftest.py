"""Shared pytest fixtures."""

import os
from pathlib import Path

import pytest

# Launchers run in-process and in subprocesses here; keep the suite hermetic (no
# persistent compilation cache under ~/.cache; tests/test_cli.py tests the cache itself).
os.environ.setdefault("GOLD_COMPILATION_CACHE", "none")

# XLA's cheapest CPU code generation for the whole suite (this process, the xdist
# workers and every subprocess inherit it; read when JAX's backend starts). The programs
# here are tiny, so compiling them is most of the suite's time: these flags cut the
# compile-bound tests by about a third (BENCHMARKS.md, "Test suite"). They change LLVM's
# code generation, not the HLO program. The notebooks, which train real networks
# as a user would, run with the flags a user has (USER_XLA_FLAGS).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
USER_XLA_FLAGS = os.environ.get("GOLD_TEST_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
os.environ["GOLD_TEST_USER_XLA_FLAGS"] = USER_XLA_FLAGS  # the workers import this file again
os.environ["XLA_FLAGS"] = f"{USER_XLA_FLAGS} {FAST_COMPILE_FLAGS}".strip()


@pytest.fixture(scope="session")
def gold_data_dir() -> Path:
    """The real-data folder ``$GOLD_DATA_DIR`` (mnist.npz, cifar10_jpeg.zip).

    Tests that need real data FAIL (never skip) when it is not configured.
    """
    value = os.environ.get("GOLD_DATA_DIR", "")
    assert value, ("GOLD_DATA_DIR is not set; run the tests with "
                   "GOLD_DATA_DIR=/path/to/shared/data (e.g. ../shared/data)")
    path = Path(value).expanduser()
    assert path.is_dir(), f"GOLD_DATA_DIR={value!r} is not a directory"
    return path


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "realdata: reads real MNIST / CIFAR-10 from $GOLD_DATA_DIR (deselect with "
                   "-m 'not realdata' when you have no data folder)")


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the real-data folder, so the suite splits cleanly into
    a self-contained part (embedded digits, generated data) and a real-data part."""
    for item in items:
        if "gold_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realdata)
