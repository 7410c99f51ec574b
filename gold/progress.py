"""Progress of long loops: a tqdm bar on a terminal, periodic log lines otherwise.

Usage::

    bar = progress.bar(total=iterations, desc="dc iterations", initial=resumed_at)
    for it in range(resumed_at, iterations):
        ...
        bar.update(1)
        bar.set_postfix({"loss": loss})
    bar.close()

Where stdout is not a terminal (a log file, a notebook's captured output, CI), the bar
becomes one line ``desc: n/total (pct%) elapsed ..s eta ..s key=value`` at most every
``GOLD_PROGRESS_SECONDS`` seconds (default 60) and at ``close``. ``GOLD_PROGRESS=bar``,
``log`` or ``off`` forces a mode.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Mapping, Optional

import tqdm

MODES = ("auto", "bar", "log", "off")


def _mode(stream) -> str:
    mode = os.environ.get("GOLD_PROGRESS", "auto").lower()
    if mode not in MODES:
        raise ValueError(f"GOLD_PROGRESS must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "bar" if getattr(stream, "isatty", lambda: False)() else "log"
    return mode


def _format(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def write(text: str, stream=sys.stdout) -> None:
    """Print one line without breaking an open progress bar."""
    if _mode(stream) == "bar":
        tqdm.tqdm.write(text, file=stream)
    else:
        print(text, file=stream, flush=True)


class LogProgress:
    """The non-terminal progress: a log line every ``interval`` seconds and at close.

    Attributes:
      n: units done (``initial`` included).
    """

    def __init__(self, total: int, desc: str, initial: int = 0, stream=sys.stdout,
                 interval: Optional[float] = None):
        self.total, self.desc, self.n = int(total), desc, int(initial)
        self._initial, self._stream = int(initial), stream
        self._interval = float(interval if interval is not None
                               else os.environ.get("GOLD_PROGRESS_SECONDS", 60))
        self._start = self._last = time.time()
        self._postfix: dict[str, Any] = {}
        self._closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done; log when ``interval`` seconds have passed."""
        self.n += int(n)
        if time.time() - self._last >= self._interval:
            self._emit()

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Values shown after the count (e.g. the current loss)."""
        self._postfix = dict(values)

    def close(self) -> None:
        """Log the final count (once)."""
        if not self._closed:
            self._closed = True
            self._emit()

    def _emit(self) -> None:
        self._last = now = time.time()
        elapsed = now - self._start
        pct = 100.0 * self.n / self.total if self.total else 100.0
        done = self.n - self._initial
        eta = elapsed / done * (self.total - self.n) if done > 0 else float("nan")
        text = f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) elapsed {elapsed:.0f}s eta {eta:.0f}s"
        if self._postfix:
            text += " " + _format(self._postfix)
        print(text, file=self._stream, flush=True)


class _Off:
    """No progress output (``GOLD_PROGRESS=off``)."""

    def update(self, n: int = 1) -> None:
        del n

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        del values

    def close(self) -> None:
        return None


class _Bar:
    """tqdm bar with the same three methods."""

    def __init__(self, total: int, desc: str, initial: int, stream):
        self._bar = tqdm.tqdm(total=total, desc=desc, initial=initial, file=stream,
                              dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()},
                              refresh=False)

    def close(self) -> None:
        self._bar.close()


def bar(total: int, desc: str, initial: int = 0, stream=None):
    """A progress reporter for a loop of ``total`` units, ``initial`` already done.

    Args:
      total: units in the whole loop (iterations, trial-epochs, points, ...).
      desc: what is counted, shown first (e.g. ``'utility trial-epochs'``).
      initial: units done before this process (a resumed run).
      stream: output (default ``sys.stdout``, looked up at call time).

    Returns:
      An object with ``update(n=1)``, ``set_postfix(dict)`` and ``close()``: a tqdm bar
      on a terminal, :class:`LogProgress` otherwise.
    """
    stream = sys.stdout if stream is None else stream
    mode = _mode(stream)
    if mode == "off":
        return _Off()
    if mode == "bar":
        return _Bar(total, desc, initial, stream)
    return LogProgress(total, desc, initial, stream)
