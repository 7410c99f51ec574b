"""The command line of every launcher: flags, ``--show_config``, user errors, Ctrl-C.

A launcher is ``cli.main(body, doc=__doc__)`` with ``body(config, workdir)``. Flags:

* ``--config=path/to/config.py[:arg]`` plus ``--config.<field>=value`` overrides;
* ``--workdir=DIR`` (required unless ``--show_config``);
* ``--show_config``: print the resolved config (after overrides) with a one-line doc per
  field and exit 0 without running;
* ``--verbose`` (or env ``GOLD_VERBOSE=1``): full tracebacks for user errors;
* ``--help``: the launcher's doc and these flags, exit 0.

Compiled programs are kept in a persistent cache (:func:`enable_compilation_cache`;
``GOLD_COMPILATION_CACHE=none`` turns it off).

User errors (:data:`USER_ERRORS`: bad values, missing files, unknown datasets, a workdir
holding another run, an unknown config file or field) print one ``error: ...`` line and
exit 1. Ctrl-C prints where the last checkpoint is and that rerunning the same command
resumes, and exits 130.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from typing import Any, Callable, Mapping, NoReturn, Optional, Sequence

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from gold import config_docs

# ValueError covers gold.data.DatasetError and gold.distill.buffer.BufferError.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, FloatingPointError,
                                                 flags.Error)
EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130
CHECKPOINT_DIR = "checkpoints"
_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


class UsageError(ValueError):
    """A bad command line (missing flag, unknown config file or field)."""


def verbose_requested(argv: Sequence[str]) -> bool:
    """``--verbose`` on the command line or ``GOLD_VERBOSE`` set to 1 / true / yes."""
    env = os.environ.get("GOLD_VERBOSE", "").strip().lower() in ("1", "true", "yes")
    return env or any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv[1:])


def one_line(err: BaseException) -> str:
    """``err``'s message on one line (whitespace runs collapsed)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def last_checkpoint(workdir: str) -> Optional[str]:
    """Path of the newest orbax checkpoint under ``workdir/checkpoints``, or None."""
    root = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return None
    steps = [int(d) for d in os.listdir(root) if d.isdigit()]
    return os.path.join(root, str(max(steps))) if steps else None


def interrupted_message(workdir: str) -> str:
    """The one line printed on Ctrl-C."""
    ckpt = last_checkpoint(workdir)
    if ckpt is not None:
        return f"interrupted; last checkpoint: {ckpt}. Rerun the same command to resume."
    return (f"interrupted; no checkpoint yet (finished parts are kept in {workdir}). "
            f"Rerun the same command to resume.")


# ------------------------------------------------------------------------ config
def _config_spec(argv: Sequence[str]) -> Optional[str]:
    for i, a in enumerate(argv[1:], start=1):
        if a.startswith(("--config=", "-config=")):
            return a.split("=", 1)[1]
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_config_file(spec: str) -> Any:
    """``get_config(arg)`` of the config file ``path[:arg]`` (``get_config()`` without arg).

    Raises:
      UsageError: the file is missing or defines no ``get_config``.
    """
    path, sep, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UsageError(f"config file {path!r} not found")
    module_spec = importlib.util.spec_from_file_location("_gold_cli_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UsageError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg) if sep else module.get_config()


def _override_names(argv: Sequence[str]) -> list[str]:
    names = []
    for a in argv[1:]:
        for prefix in ("--config.", "-config.", "--noconfig.", "-noconfig."):
            if a.startswith(prefix):
                names.append(a[len(prefix):].split("=", 1)[0])
    return names


def check_overrides(config: Any, names: Sequence[str]) -> None:
    """Raise :class:`UsageError` for a ``--config.<name>`` that is not a field of ``config``."""
    for name in names:
        node = config
        for part in name.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                raise UsageError(f"unknown config field {name!r}; --show_config lists the fields")
            node = node[part]


# --------------------------------------------------------------------------- main
def _define_flags(fv: flags.FlagValues, argv: Sequence[str], config_help: str, workdir_help: str):
    config = config_flags.DEFINE_config_file("config", None, config_help, flag_values=fv,
                                             lock_config=True, sys_argv=list(argv))
    workdir = flags.DEFINE_string("workdir", None, workdir_help, flag_values=fv)
    show = flags.DEFINE_bool("show_config", False, "print the resolved config with field docs and exit",
                             flag_values=fv)
    flags.DEFINE_bool("verbose", False, "full tracebacks for errors (or env GOLD_VERBOSE=1)",
                      flag_values=fv)
    return config, workdir, show


def _fail(err: BaseException, verbose: bool) -> NoReturn:
    if verbose:
        traceback.print_exception(err)
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def parse(argv: Sequence[str], doc: str = "", docs: Optional[Mapping[str, str]] = None,
          config_help: str = "a configs/*.py file[:arg]; fields overridable as --config.<field>=...",
          workdir_help: str = "the run's folder (rerunning with it resumes)") -> tuple[Any, str]:
    """Parse a launcher's command line; returns ``(config, workdir)``.

    Handles ``--help`` and ``--show_config`` itself (prints, exits 0).

    Raises:
      UsageError: missing ``--config`` / ``--workdir``, unknown config file or field.
      flags.Error: a malformed flag or override value.
    """
    fv = flags.FlagValues()
    config_holder, workdir_holder, show_holder = _define_flags(fv, argv, config_help, workdir_help)
    if any(a in _HELP for a in argv[1:]):
        print((doc or "").strip() + "\n\nflags:\n" + fv.get_help() +
              "\n\nEvery config field can be set as --config.<field>=value; "
              "--config=FILE --show_config lists them.")
        sys.exit(0)
    spec = _config_spec(argv)
    if not spec:
        raise UsageError("--config is required (e.g. --config=configs/train.py:digits)")
    check_overrides(load_config_file(spec), _override_names(argv))
    fv(list(argv))
    config = config_holder.value
    if show_holder.value:
        extra = {**(docs or {}), **config_docs.algorithm_docs(config)}
        print(config_docs.format_table(config_docs.describe(config, extra)))
        sys.exit(0)
    if not workdir_holder.value:
        raise UsageError("--workdir is required (the folder the run writes to and resumes from)")
    return config, workdir_holder.value


DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "gold", "jax")


def enable_compilation_cache(env: Mapping[str, str] = os.environ) -> Optional[str]:
    """Turn on JAX's persistent compilation cache for a launcher run.

    The folder is ``$GOLD_COMPILATION_CACHE`` (``none`` / ``off`` / empty: disabled),
    else ``$JAX_COMPILATION_CACHE_DIR`` (JAX's own variable), else
    ``~/.cache/gold/jax``. Programs that took at least
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` (default 1) seconds to compile are
    stored, so a rerun, a resumed run or another run of the same setting loads them
    instead of compiling again (a DM MNIST run compiles ~20 s of programs; MTT and KIP
    more). Results do not depend on it.

    Returns:
      the cache folder, or None when disabled.
    """
    choice = env.get("GOLD_COMPILATION_CACHE")
    if choice is not None and choice.strip().lower() in ("", "none", "off"):
        return None
    path = os.path.expanduser(choice or env.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT_COMPILATION_CACHE)
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    min_s = float(env.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1.0))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_s)
    return path


def main(body: Callable[[Any, str], Any], doc: str = "", docs: Optional[Mapping[str, str]] = None,
         argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run a launcher: parse the command line, call ``body(config, workdir)``, exit.

    Args:
      body: the launcher's work; its return value is ignored.
      doc: the launcher's help text (its module docstring).
      docs: one-line docs of the launcher's own config fields
        (:mod:`gold.config_docs` tables).
      argv: the command line (default ``sys.argv``).

    Exits 0 on success, 1 with one ``error: ...`` line on a user error
    (:data:`USER_ERRORS`), 130 on Ctrl-C; other exceptions propagate with their traceback.
    """
    argv = list(sys.argv if argv is None else argv)
    verbose = verbose_requested(argv)
    flags.FLAGS.mark_as_parsed()  # absl logging (orbax) without the launcher's flags
    absl_logging.set_verbosity(absl_logging.WARNING)  # no per-save orbax INFO lines
    workdir = None
    try:
        config, workdir = parse(argv, doc, docs)
        enable_compilation_cache()
        body(config, os.path.abspath(workdir))
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        where = interrupted_message(os.path.abspath(workdir)) if workdir else "interrupted."
        print(f"\n{where}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except USER_ERRORS as err:
        _fail(err, verbose)
    sys.exit(0)
