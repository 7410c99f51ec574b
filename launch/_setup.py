"""Launcher plumbing: put the repo root on sys.path so `gold` imports from a checkout
that is not pip-installed. The command line itself is :mod:`gold.cli`."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
