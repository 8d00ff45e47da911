"""A Keras-style text progress bar that costs (almost) nothing per step.

`Progbar.update(current, values)` is called once per batch by ProgbarLogger.
Formatting and writing happen only when at least `interval` seconds passed
since the last draw (and always for the final update), so the per-step cost is
one `time.monotonic()` call and a comparison. On a terminal the bar redraws in
place with a carriage return; when stdout is not a TTY (logs, CI, pipes) it
degrades to plain lines: one at the end of the epoch, plus one every
`interval_nontty` seconds for long epochs.

    Epoch 3/10
     57/422 [====>.........................] - 1s elapsed - ETA: 6s - loss: 0.4123 - accuracy: 0.8821
    422/422 [==============================] - 7s 17ms/step - loss: 0.3891 - accuracy: 0.8902 - val_loss: ...
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Sequence, TextIO

__all__ = ["Progbar", "format_duration", "format_value"]


def format_duration(seconds: float) -> str:
    """A duration in Keras's ETA style: ``7s``, ``1:05``, ``1:02:03``.

    Parameters
    ----------
    seconds : float
        The duration.

    Returns
    -------
    str
        The text ("?" for a negative or non-finite duration).

    Examples
    --------
    >>> from fastgrad.utils import format_duration
    >>> format_duration(65), format_duration(3723)
    ('1:05', '1:02:03')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{(s % 3600) // 60:02d}:{s % 60:02d}"
    if s >= 60:
        return f"{s // 60}:{s % 60:02d}"
    return f"{s}s"


def _time_per_unit(seconds: float, unit: str) -> str:
    if seconds >= 1:
        return f"{seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit}"
    return f"{seconds * 1e6:.0f}us/{unit}"


def format_value(v: Any) -> str:
    """A logged value as the progress bar prints it (4 decimals, or exponent form).

    Parameters
    ----------
    v : object
        A number (anything ``float()`` takes) or another value.

    Returns
    -------
    str
        The text; ``str(v)`` for a value that is not a number.

    Examples
    --------
    >>> from fastgrad.utils import format_value
    >>> format_value(0.123456), format_value(12345.0)
    ('0.1235', '1.2345e+04')
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != 0.0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.4e}"
    return f"{f:.4f}"


def _isatty(stream: Any) -> bool:
    if os.environ.get("FASTGRAD_PROGBAR_TTY", "") in ("0", "1"):
        return os.environ["FASTGRAD_PROGBAR_TTY"] == "1"
    try:
        return bool(stream.isatty())
    except Exception:
        return False


class Progbar:
    """A Keras-style text progress bar.

    Values not named in `stateful_metrics` are averaged over the units seen
    (weighted by the step size), as in Keras. ProgbarLogger passes its logs
    (already running means) as stateful.

    Parameters
    ----------
    target : int or None
        Total number of units (None when unknown).
    width : int, default 30
        Width of the bar in characters.
    verbose : {1, 2, 0}, default 1
        1: a live bar (redrawn at most every `interval` seconds); 2: only the
        final line; 0: silent.
    interval : float, default 0.25
        Least time between two redraws on a terminal, in seconds.
    stateful_metrics : iterable of str, True or None, default None
        Names of values shown as given; True: every value.
    unit_name : str, default "step"
        Unit in the time-per-unit text.
    stream : file-like or None, default None
        Where to write (None: ``sys.stdout`` at the time of writing).
    interval_nontty : float, default 10.0
        Least time between two mid-epoch lines when the stream is not a terminal.

    Raises
    ------
    ValueError
        If `target` is negative or `verbose` is not 0, 1 or 2.
    """

    def __init__(self, target: int | None, width: int = 30, verbose: int = 1, interval: float = 0.25,
                 stateful_metrics: Iterable[str] | bool | None = None, unit_name: str = "step",
                 stream: TextIO | None = None, interval_nontty: float = 10.0) -> None:
        if target is not None:
            target = int(target)
            if target < 0:
                raise ValueError(f"Progbar: target must be >= 0 or None, got {target}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"Progbar: verbose must be 0, 1 or 2, got {verbose!r}")
        self.target = target
        self.width = int(width)
        self.verbose = verbose
        self.interval = float(interval)
        self.interval_nontty = float(interval_nontty)
        # True: every value is shown as given (ProgbarLogger's logs are running means already)
        self._all_stateful = stateful_metrics is True
        self.stateful_metrics = set() if stateful_metrics is True else set(stateful_metrics or ())
        self.unit_name = unit_name
        self._stream = stream
        self._dynamic = _isatty(self.stream)
        self._values: dict[str, list] = {}          # name -> [weighted sum, weight] or (value,) for stateful
        self._order: list[str] = []
        self._seen = 0
        self._start = time.monotonic()
        # a terminal shows the bar at once; plain output waits a full interval before a mid-epoch line
        self._last_draw = -math.inf if self._dynamic else self._start
        self._wait = self.interval if self._dynamic else self.interval_nontty
        self._next_draw = self._last_draw + self._wait if verbose == 1 else math.inf
        self._last_len = 0
        self._finalized = False

    @property
    def stream(self) -> TextIO:
        """The stream written to."""
        return self._stream if self._stream is not None else sys.stdout

    def _record(self, current: int, values: Sequence[tuple[str, Any]]) -> None:
        step = max(current - self._seen, 1)
        for k, v in values:
            if k not in self._values:
                self._order.append(k)
            if self._all_stateful or k in self.stateful_metrics:
                self._values[k] = [v, 1]
            else:
                acc = self._values.get(k)
                if acc is None:
                    self._values[k] = [v * step, step]
                else:
                    acc[0] += v * step
                    acc[1] += step
        self._seen = current

    def _metrics_text(self) -> str:
        parts = []
        for k in self._order:
            s, w = self._values[k]
            parts.append(f" - {k}: {format_value(s / w if w else s)}")
        return "".join(parts)

    def _bar(self, current: int) -> str:
        if self.target:
            n = len(str(self.target))
            frac = min(current / self.target, 1.0)
            filled = int(self.width * frac)
            bar = "=" * filled
            if current < self.target and filled < self.width:
                bar += ">"
            bar = bar.ljust(self.width, ".")
            return f"{current:>{n}d}/{self.target} [{bar}]"
        return f"{current}/Unknown"

    def update(self, current: int, values: Sequence[tuple[str, Any]] | None = None,
               finalize: bool | None = None) -> None:
        """Record progress, and draw when an interval has passed or at the end.

        Parameters
        ----------
        current : int
            Units done so far.
        values : sequence of (str, number) or None, default None
            Values to show, as ``[(name, value), ...]``.
        finalize : bool or None, default None
            Whether this is the final update (None: when `current` reaches `target`).
        """
        if values:
            self._record(current, values)
        else:
            self._seen = current
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        if self.verbose == 0 or self._finalized:
            return
        now = time.monotonic()
        if not finalize and now < self._next_draw:
            return
        self._last_draw = now
        self._next_draw = now + self._wait if self.verbose == 1 else math.inf
        self._draw(current, now, finalize)

    def due(self) -> bool:
        """Whether a non-final update now would draw (lets callers skip preparing values).

        Returns
        -------
        bool
            True when the next :meth:`update` draws.
        """
        return time.monotonic() >= self._next_draw

    def skip(self, current: int) -> None:
        """Record progress without values or drawing (the cheap path between draws).

        Parameters
        ----------
        current : int
            Units done so far.
        """
        self._seen = current

    def add(self, n: int, values: Sequence[tuple[str, Any]] | None = None) -> None:
        """Advance by `n` units (Keras's ``Progbar.add``).

        Parameters
        ----------
        n : int
            Units done since the last update.
        values : sequence of (str, number) or None, default None
            Values to show, as ``[(name, value), ...]``.
        """
        self.update(self._seen + n, values)

    def _draw(self, current: int, now: float, finalize: bool) -> None:
        elapsed = now - self._start
        if finalize:
            self._finalized = True
            per_unit = elapsed / current if current else 0.0
            if self.verbose == 1:
                head = self._bar(current)
            else:
                head = f"{current}/{self.target}" if self.target is not None else f"{current}"
            text = f"{head} - {format_duration(elapsed)} {_time_per_unit(per_unit, self.unit_name)}"
            text += self._metrics_text()
            self._write(text, end=True)
            return
        text = f"{self._bar(current)} - {format_duration(elapsed)} elapsed"
        if self.target and current:
            eta = elapsed / current * (self.target - current)
            text += f" - ETA: {format_duration(eta)}"
        text += self._metrics_text()
        self._write(text, end=False)

    def _write(self, text: str, end: bool) -> None:
        stream = self.stream
        if self._dynamic:
            pad = max(self._last_len - len(text), 0)
            stream.write("\r" + text + " " * pad + ("\n" if end else ""))
            self._last_len = 0 if end else len(text)
        else:
            stream.write(text + "\n")
        try:
            stream.flush()
        except Exception:
            pass
