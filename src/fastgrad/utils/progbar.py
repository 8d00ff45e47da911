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

__all__ = ["Progbar", "format_duration", "format_value"]


def format_duration(seconds: float) -> str:
    """`7s`, `1:05`, `1:02:03` (Keras's ETA style)."""
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


def format_value(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != 0.0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.4e}"
    return f"{f:.4f}"


def _isatty(stream) -> bool:
    if os.environ.get("FASTGRAD_PROGBAR_TTY", "") in ("0", "1"):
        return os.environ["FASTGRAD_PROGBAR_TTY"] == "1"
    try:
        return bool(stream.isatty())
    except Exception:
        return False


class Progbar:
    """Progress bar over `target` units (None when unknown).

    verbose 1: live bar (time-throttled); verbose 2: only the final line;
    verbose 0: silent. `stateful_metrics` names values shown as given; other
    values are averaged over the units seen (weighted by the step size), as in
    Keras. ProgbarLogger passes its logs (already running means) as stateful.
    `stream=None` means "sys.stdout at the time of writing".
    """

    def __init__(self, target, width=30, verbose=1, interval=0.25, stateful_metrics=None,
                 unit_name="step", stream=None, interval_nontty=10.0):
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
        self._values = {}          # name -> [weighted sum, weight] or (value,) for stateful
        self._order = []
        self._seen = 0
        self._start = time.monotonic()
        # a terminal shows the bar at once; plain output waits a full interval before a mid-epoch line
        self._last_draw = -math.inf if self._dynamic else self._start
        self._wait = self.interval if self._dynamic else self.interval_nontty
        self._next_draw = self._last_draw + self._wait if verbose == 1 else math.inf
        self._last_len = 0
        self._finalized = False

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def _record(self, current, values):
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

    def _metrics_text(self):
        parts = []
        for k in self._order:
            s, w = self._values[k]
            parts.append(f" - {k}: {format_value(s / w if w else s)}")
        return "".join(parts)

    def _bar(self, current):
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

    def update(self, current, values=None, finalize=None):
        """Record progress `current` (units done) with `values` [(name, number), ...]."""
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
        """Whether a non-final update now would draw (lets callers skip preparing values)."""
        return time.monotonic() >= self._next_draw

    def skip(self, current) -> None:
        """Record progress without values or drawing (the cheap path between draws)."""
        self._seen = current

    def add(self, n, values=None):
        self.update(self._seen + n, values)

    def _draw(self, current, now, finalize):
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

    def _write(self, text, end):
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
