"""Stopping a run that cannot go anywhere: the stall detector and the errors that end a run.

A network whose init has collapsed the signal outputs the same logits for every
image: its loss sits at ln(num_classes), the loss of a uniform guess, and the
std of the logits across the batch is ~0. Both at once, after the warm-up, is a
stall; a slow but healthy start keeps its logits input-dependent.
"""

from __future__ import annotations

import dataclasses
import math

STOPPED_EXIT_CODE = 3


class TrainingStopped(RuntimeError):
  """Training cannot usefully go on (stall with fail_on_stall, NaN/Inf); exit code 3."""


class TrainingDiverged(TrainingStopped):
  """The loss or the gradients became NaN or Inf."""


class TrainingStalled(TrainingStopped):
  """The loss sits at chance and the logits do not depend on the input."""


@dataclasses.dataclass
class StallDetector:
  """Checks each logged interval from `check_steps` on; warns once, or raises if `fail`."""

  num_classes: int
  init: str
  check_steps: int = 200
  loss_band: float = 0.02
  logit_std: float = 1e-3
  fail: bool = False
  stalled: bool = False  # the state at the last check
  warned_at: int | None = None

  @classmethod
  def from_config(cls, config, num_classes: int) -> "StallDetector":
    return cls(num_classes, config.init, config.stall_check_steps, config.stall_loss_band,
               config.stall_logit_std, config.fail_on_stall)

  def check(self, step: int, loss: float, logit_std: float) -> str | None:
    """Returns the warning to print the first time the run is found stalled, else None."""
    if step < self.check_steps:
      return None
    chance = math.log(self.num_classes)
    self.stalled = abs(loss - chance) < self.loss_band and logit_std < self.logit_std
    if not self.stalled or self.warned_at is not None:
      return None
    self.warned_at = step
    message = (f"training has stalled at step {step}: loss {loss:.4f} is within {self.loss_band} of "
               f"ln({self.num_classes}) = {chance:.4f} (chance) and the logits' std across the batch "
               f"is {logit_std:.2e} (< {self.logit_std:g}), so the output no longer depends on the "
               f"input. The init '{self.init}' has likely collapsed the signal; try --init glorot, "
               "--init he_normal, --init lsuv or --batch-norm "
               "(python -m googlenet_jax.diagnose shows where it collapses).")
    if self.fail:
      raise TrainingStalled(message)
    return "warning: " + message

  def summary(self) -> dict:
    return {"stalled": self.stalled, "stall_warning_step": self.warned_at}
