"""gold.cli: --help, --show_config, one-line user errors, Ctrl-C (in process, no JAX work)."""

import os

import pytest

from gold import cli, config_docs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIG = os.path.join(REPO, "configs", "train.py")


def _run(argv, body=None, monkeypatch=None):
    """Exit code of ``cli.main`` on ``argv`` with a body that records its call."""
    calls = []
    with pytest.raises(SystemExit) as exc:
        cli.main(body or (lambda config, workdir: calls.append((config, workdir))),
                 "Doc of the launcher.", config_docs.TRAIN, argv=["launcher", *argv])
    return exc.value.code, calls


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.delenv("GOLD_VERBOSE", raising=False)


def test_help_exits_zero_and_lists_the_flags(capsys):
    code, calls = _run(["--help"])
    out = capsys.readouterr().out
    assert code == 0 and not calls
    for flag in ("--config", "--workdir", "show_config", "verbose", "Doc of the launcher."):
        assert flag in out


def test_show_config_prints_resolved_fields_with_docs(capsys):
    code, calls = _run([f"--config={TRAIN_CONFIG}:digits", "--config.epochs=7", "--show_config"])
    out = capsys.readouterr().out
    assert code == 0 and not calls  # no workdir needed, nothing run
    assert "epochs = 7" in out and "# training epochs" in out
    assert "data.name = 'digits'" in out


def test_runs_the_body_with_the_overridden_config(tmp_path):
    code, calls = _run([f"--config={TRAIN_CONFIG}:digits,runlocal", "--config.lr=0.5",
                        f"--workdir={tmp_path}"])
    assert code == 0 and len(calls) == 1
    config, workdir = calls[0]
    assert config.lr == 0.5 and config.model.width == 32 and workdir == str(tmp_path)


@pytest.mark.parametrize("argv,message", [
    ([f"--config={TRAIN_CONFIG}:mnistt", "--workdir=w"], "error: unknown dataset 'mnistt'"),
    (["--config=configs/nothere.py", "--workdir=w"], "error: config file 'configs/nothere.py' not found"),
    ([f"--config={TRAIN_CONFIG}", "--config.model.widht=3", "--workdir=w"],
     "error: unknown config field 'model.widht'"),
    ([f"--config={TRAIN_CONFIG}", "--config.epochs=abc", "--workdir=w"], "error: flag --config.epochs=abc"),
    ([f"--config={TRAIN_CONFIG}"], "error: --workdir is required"),
    (["--workdir=w"], "error: --config is required"),
])
def test_user_errors_are_one_line_without_traceback(argv, message, capsys):
    code, calls = _run(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USER_ERROR and not calls
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_errors_raised_by_the_run_and_verbose_traceback(tmp_path, capsys, monkeypatch):
    def body(config, workdir):
        raise FileNotFoundError("no mnist.npz in /data")

    argv = [f"--config={TRAIN_CONFIG}:digits", f"--workdir={tmp_path}"]
    assert _run(argv, body)[0] == 1
    assert capsys.readouterr().err == "error: no mnist.npz in /data\n"
    assert _run(argv + ["--verbose"], body)[0] == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.endswith("error: no mnist.npz in /data\n")
    monkeypatch.setenv("GOLD_VERBOSE", "1")
    assert _run(argv, body)[0] == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_names_the_last_checkpoint_and_exits_130(tmp_path, capsys):
    def body(config, workdir):
        for step in ("5", "10"):
            os.makedirs(os.path.join(workdir, "checkpoints", step))
        raise KeyboardInterrupt

    code, _ = _run([f"--config={TRAIN_CONFIG}:digits", f"--workdir={tmp_path}"], body)
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_INTERRUPTED
    assert err == (f"interrupted; last checkpoint: {tmp_path}/checkpoints/10. "
                   f"Rerun the same command to resume.")


def test_ctrl_c_before_any_checkpoint(tmp_path, capsys):
    def body(config, workdir):
        raise KeyboardInterrupt

    code, _ = _run([f"--config={TRAIN_CONFIG}:digits", f"--workdir={tmp_path}"], body)
    assert code == 130
    assert "no checkpoint yet" in capsys.readouterr().err


def test_other_exceptions_keep_their_traceback(tmp_path):
    def body(config, workdir):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(body, argv=["l", f"--config={TRAIN_CONFIG}:digits", f"--workdir={tmp_path}"])


def test_compilation_cache_folder_from_the_environment(tmp_path):
    import jax

    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    try:
        for off in ("none", "OFF", ""):
            assert cli.enable_compilation_cache({"GOLD_COMPILATION_CACHE": off}) is None
        mine = str(tmp_path / "mine")
        assert cli.enable_compilation_cache({"GOLD_COMPILATION_CACHE": mine,
                                             "JAX_COMPILATION_CACHE_DIR": "/elsewhere"}) == mine
        assert jax.config.jax_compilation_cache_dir == mine
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
        jaxs = str(tmp_path / "jax")
        assert cli.enable_compilation_cache({"JAX_COMPILATION_CACHE_DIR": jaxs,
                                             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}) == jaxs
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        assert cli.enable_compilation_cache({}) == os.path.expanduser("~/.cache/gold/jax")
    finally:
        jax.config.update("jax_compilation_cache_dir", before[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_a_launcher_process_writes_its_compiled_programs_to_the_cache(tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    env = {**os.environ, "GOLD_COMPILATION_CACHE": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    code = ("from gold import cli; cli.enable_compilation_cache(); import jax, jax.numpy as jnp; "
            "print(float(jax.jit(lambda x: jnp.sin(x) * 2)(1.0)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(1.682941969, rel=1e-6)
    assert cache.is_dir() and any(cache.iterdir())
