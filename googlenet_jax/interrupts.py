"""SIGINT (Ctrl-C) and SIGTERM (Colab, schedulers) as a request to stop at the next step.

Inside `StopOnSignal()` the first signal only sets `signum`; the training loop
checks it between steps, writes a checkpoint of the current step and raises
`TrainingInterrupted`. A second signal interrupts at once (KeyboardInterrupt),
for a user who does not want to wait for the step (or the first compile) to end.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
  """The run stopped on a signal after checkpointing; exit code 128 + signal number."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


class StopOnSignal:
  """Context manager: `signum` becomes the number of the first SIGINT/SIGTERM received."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    if self.signum is not None:
      raise KeyboardInterrupt
    self.signum = signum

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ""

  def __enter__(self) -> "StopOnSignal":
    if threading.current_thread() is threading.main_thread():  # handlers only work there
      self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
