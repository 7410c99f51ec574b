"""Launcher plumbing: put the repo root on sys.path (for `configs`) and define the CLI flags."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def config_and_workdir_flags(config_help: str, workdir_help: str):
    """Define the CLI contract's two required flags: `--config` (a configs/*.py file,
    fields overridable as `--config.<field>=...`) and `--workdir`.

    Returns:
      (config_holder, workdir_holder): absl flag holders; `.value` after app.run parses.
    """
    from absl import flags
    from ml_collections import config_flags

    config = config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, workdir_help)
    flags.mark_flags_as_required(["config", "workdir"])
    return config, workdir
