"""The paper's SGD rule and learning-rate schedules (section 5).

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

with batch 128, momentum 0.9, weight decay 0.0005, an equal learning rate for every
layer starting at 0.01 and divided by 10 when the validation error stops improving
(three times in the paper's run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Section 5.
PAPER_LR = 0.01
PAPER_MOMENTUM = 0.9
PAPER_WEIGHT_DECAY = 0.0005
LR_DIVISOR = 10  # "divide the learning rate by 10 when the validation error rate stopped improving"
PLATEAU_MAX_REDUCTIONS = 3  # "reduced three times prior to termination"
PLATEAU_PATIENCE = 5  # epochs; the paper gives no number, so this is alexctl's choice
PLATEAU_MIN_DELTA = 0.001  # absolute top-1 error (a fraction) that counts as an improvement


class PaperSGD(torch.optim.Optimizer):
    """SGD with momentum and weight decay exactly as section 5 writes it.

    The learning rate sits *inside* the momentum buffer: v accumulates steps, not
    gradients. torch.optim.SGD keeps lr outside (b <- mu b + g + wd w; w <- w - lr b).
    While lr is constant the two produce the same weights (v = -lr * b); right after an
    lr change they differ: here the old velocity, scaled by the old lr, keeps carrying
    the weights for a while, whereas PyTorch rescales the whole buffer at once.

    The buffer (state key `momentum_buffer`) starts at zero, so the first step is
    -lr * (g + wd * w). Parameters whose grad is None are skipped and keep their buffer.
    """

    def __init__(self, params, lr: float = PAPER_LR, momentum: float = PAPER_MOMENTUM,
                 weight_decay: float = PAPER_WEIGHT_DECAY):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}.")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("PaperSGD does not support sparse gradients.")
            grads = [p.grad for p in params]
            velocities = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocities.append(state["momentum_buffer"])
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            # One fused pass per group (foreach kernels on CUDA, a per-tensor loop on CPU).
            torch._foreach_mul_(velocities, momentum)
            if weight_decay != 0:
                torch._foreach_add_(velocities, params, alpha=-weight_decay * lr)
            torch._foreach_add_(velocities, grads, alpha=-lr)
            torch._foreach_add_(params, velocities)
        return loss


def build_optimizer(model: torch.nn.Module, *, rule: str = "paper", lr: float = PAPER_LR,
                    momentum: float = PAPER_MOMENTUM, weight_decay: float = PAPER_WEIGHT_DECAY,
                    decay_biases: bool = False) -> torch.optim.Optimizer:
    """The optimizer for `model`: rule "paper" (PaperSGD) or "pytorch" (torch.optim.SGD).

    Two parameter groups, named in the group dict: "weights" (ndim > 1) are decayed;
    "biases" (ndim <= 1) are decayed only with `decay_biases`. The paper's formula
    does not single biases out, but the authors' released cuda-convnet code applies
    weight decay to weights only, so that is the default.
    """
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    biases = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [dict(name="weights", params=weights, weight_decay=weight_decay),
              dict(name="biases", params=biases, weight_decay=weight_decay if decay_biases else 0.0)]
    groups = [g for g in groups if g["params"]]
    if rule == "paper":
        return PaperSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if rule == "pytorch":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    raise ValueError(f"Unknown optimizer rule {rule!r}: use 'paper' or 'pytorch'.")


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
    max_reductions: int = PLATEAU_MAX_REDUCTIONS
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

    def apply(self, optimizer: torch.optim.Optimizer) -> None:
        """Set the current lr in every parameter group (the paper uses one lr for all layers)."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr

    def state_dict(self) -> dict:
        return dict(spec=self.spec, base_lr=self.base_lr, reductions=self.reductions,
                    best_error=self.best_error, bad_epochs=self.bad_epochs, last_epoch=self.last_epoch)

    def load_state_dict(self, state: dict) -> None:
        if state["spec"] != self.spec or state["base_lr"] != self.base_lr:
            raise ValueError(f"Saved schedule {state['spec']!r} at lr {state['base_lr']} does not match "
                             f"schedule {self.spec!r} at lr {self.base_lr}.")
        self.reductions = int(state["reductions"])
        self.best_error = None if state["best_error"] is None else float(state["best_error"])
        self.bad_epochs = int(state["bad_epochs"])
        self.last_epoch = int(state["last_epoch"])

    def describe(self) -> str:
        if self.kind == "plateau":
            rule = (f"divide by {LR_DIVISOR} when val top-1 error has not improved by more than {self.min_delta} "
                    f"for {self.patience} epochs, at most {self.max_reductions} times")
        elif self.kind == "step":
            rule = f"divide by {LR_DIVISOR} after epochs {', '.join(map(str, self.milestones))}"
        else:
            rule = "constant"
        return f"lr {self.base_lr:g}, {rule} (now {self.lr:g} after {self.reductions} reductions)"


def parse_schedule(spec: str, base_lr: float) -> LrSchedule:
    """"plateau", "plateau:PATIENCE", "step:E1,E2,..." or "constant" -> LrSchedule."""
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
    raise ValueError(f"Bad learning-rate schedule {spec!r}: use 'plateau', 'plateau:PATIENCE' (epochs > 0), "
                     "'step:E1,E2,...' (strictly increasing epochs > 0) or 'constant'.")
