"""Ctrl-C during training lands between steps, never inside one.

Python raises KeyboardInterrupt at whatever bytecode the main thread is
running when SIGINT arrives: after a C training chunk returned but before
`optimizer.iterations`, the dropout streams or the metrics were updated, or
inside a batch-end callback. The model would then hold weights one step
ahead of its counters, or a step without its callback.

`deferred_sigint()` (used by fit and train_on_batch) replaces the default
SIGINT handler for the duration of the loop with one that only records the
request; the loop calls `check()` at step boundaries (after a step's
bookkeeping and its batch-end callbacks), where raising KeyboardInterrupt
leaves the model exactly in the state after the last completed step:
weights, optimizer slots and iterations, random streams, metrics. A second
Ctrl-C before the next boundary interrupts at once (an escape hatch; the
state is then not guaranteed). Nothing is changed outside the main thread,
or when the program installed its own SIGINT handler."""
from __future__ import annotations

import contextlib
import signal
import threading


class _Deferred:
    active = False
    pending = False

    def _handler(self, signum, frame):
        if self.pending:                  # second Ctrl-C: give up on a clean boundary
            raise KeyboardInterrupt
        self.pending = True

    def check(self) -> None:
        """Raise KeyboardInterrupt here if Ctrl-C was pressed since the last check."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint():
    d = _Deferred()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield d
        return
    prev = signal.signal(signal.SIGINT, d._handler)
    d.active = True
    try:
        yield d
    finally:
        signal.signal(signal.SIGINT, prev)
    d.check()                             # a request that came during the last step
