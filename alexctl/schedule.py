"""The learning-rate schedules (section 5): the paper divides the rate by 10 when the validation
error stops improving, three times before the end.

Torch-free, so that settings can be validated (alexctl.config) without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alexctl.paper import LR_DIVISOR, LR_REDUCTIONS

PLATEAU_PATIENCE = 5  # epochs; the paper gives no number, so this is alexctl's choice
PLATEAU_MIN_DELTA = 0.001  # absolute top-1 error (a fraction) that counts as an improvement


@dataclass
class LrSchedule:
    """The learning rate as a function of validation history. Build it with parse_schedule.

    kind "plateau": divide by 10 when the validation top-1 error has not beaten the best
    seen so far by more than `min_delta` for `patience` consecutive epochs, at most
    `max_reductions` times; the patience counter restarts after each reduction (the
    best error is kept). Epochs reported without a validation error (None) are ignored.
    kind "step": divide by 10 after each epoch in `milestones` completes.
    kind "constant": never change.
    """

    spec: str
    base_lr: float
    kind: str
    patience: int = PLATEAU_PATIENCE
    milestones: tuple[int, ...] = ()
    min_delta: float = PLATEAU_MIN_DELTA
    max_reductions: int = LR_REDUCTIONS
    # Progress: everything state_dict saves.
    reductions: int = 0
    best_error: float | None = None
    bad_epochs: int = 0
    last_epoch: int = 0

    @property
    def lr(self) -> float:
        # Computed from base_lr each time, so no rounding accumulates and a resume is exact.
        return self.base_lr / LR_DIVISOR**self.reductions

    def after_epoch(self, epoch: int, val_top1_error: float | None) -> bool:
        """Record epoch `epoch` (counted from 1) and its validation top-1 error; True if lr changed."""
        if epoch <= self.last_epoch:
            raise ValueError(f"after_epoch got epoch {epoch} after epoch {self.last_epoch}: epochs must increase.")
        self.last_epoch = epoch
        before = self.reductions
        if self.kind == "step":
            self.reductions = sum(1 for m in self.milestones if m <= epoch)
        elif self.kind == "plateau" and val_top1_error is not None:
            if self.best_error is None or val_top1_error < self.best_error - self.min_delta:
                self.best_error, self.bad_epochs = float(val_top1_error), 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs >= self.patience and self.reductions < self.max_reductions:
                    self.reductions += 1
                    self.bad_epochs = 0
        return self.reductions != before

    def apply(self, optimizer) -> None:
        """Set the current lr in every parameter group (the paper uses one lr for all layers); a 0-d tensor lr
        (training.optim.hold_for_compile) is filled in place, so a compiled step sees the new value."""
        for group in optimizer.param_groups:
            if hasattr(group["lr"], "fill_"):
                group["lr"].fill_(self.lr)
            else:
                group["lr"] = self.lr

    def state_dict(self) -> dict:
        return dict(
            spec=self.spec,
            base_lr=self.base_lr,
            reductions=self.reductions,
            best_error=self.best_error,
            bad_epochs=self.bad_epochs,
            last_epoch=self.last_epoch,
        )

    def load_state_dict(self, state: dict) -> None:
        if state["spec"] != self.spec or state["base_lr"] != self.base_lr:
            raise ValueError(
                f"Saved schedule {state['spec']!r} at lr {state['base_lr']} does not match "
                f"schedule {self.spec!r} at lr {self.base_lr}."
            )
        self.reductions = int(state["reductions"])
        self.best_error = None if state["best_error"] is None else float(state["best_error"])
        self.bad_epochs = int(state["bad_epochs"])
        self.last_epoch = int(state["last_epoch"])

    def describe(self) -> str:
        if self.kind == "plateau":
            rule = (
                f"divide by {LR_DIVISOR} when val top-1 error has not improved by more than {self.min_delta} "
                f"for {self.patience} epochs, at most {self.max_reductions} times"
            )
        elif self.kind == "step":
            rule = f"divide by {LR_DIVISOR} after epochs {', '.join(map(str, self.milestones))}"
        else:
            rule = "constant"
        return f"lr {self.base_lr:g}, {rule} (now {self.lr:g} after {self.reductions} reductions)"


def parse_schedule(spec: str, base_lr: float) -> LrSchedule:
    """ "plateau", "plateau:PATIENCE", "step:E1,E2,..." or "constant" -> LrSchedule."""
    if not base_lr > 0:
        raise ValueError(f"The base learning rate must be positive, got {base_lr}.")
    if spec == "constant":
        return LrSchedule(spec, base_lr, "constant")
    if spec == "plateau":
        return LrSchedule(spec, base_lr, "plateau")
    if m := re.fullmatch(r"plateau:(\d+)", spec):
        if int(m[1]) > 0:
            return LrSchedule(spec, base_lr, "plateau", patience=int(m[1]))
    elif m := re.fullmatch(r"step:(\d+(?:,\d+)*)", spec):
        epochs = tuple(int(e) for e in m[1].split(","))
        if epochs[0] > 0 and all(a < b for a, b in zip(epochs, epochs[1:])):
            return LrSchedule(spec, base_lr, "step", milestones=epochs)
    raise ValueError(
        f"Bad learning-rate schedule {spec!r}: use 'plateau', 'plateau:PATIENCE' (epochs > 0), "
        "'step:E1,E2,...' (strictly increasing epochs > 0) or 'constant'."
    )
