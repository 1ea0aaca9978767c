"""The paper's SGD rule (section 5); its learning-rate schedules are in schedule.py.

    v <- momentum * v - weight_decay * lr * w - lr * dL/dw
    w <- w + v

with batch 128, momentum 0.9, weight decay 0.0005 and an equal learning rate for every layer.
"""

from __future__ import annotations

import torch

from alexctl.paper import LR, MOMENTUM, WEIGHT_DECAY


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

    def __init__(self, params, lr: float = LR, momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY):
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


def build_optimizer(
    model: torch.nn.Module,
    *,
    rule: str = "paper",
    lr: float = LR,
    momentum: float = MOMENTUM,
    weight_decay: float = WEIGHT_DECAY,
    decay_biases: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer for `model`: rule "paper" (PaperSGD) or "pytorch" (torch.optim.SGD).

    Two parameter groups, named in the group dict: "weights" (ndim > 1) are decayed;
    "biases" (ndim <= 1) are decayed only with `decay_biases`. The paper's formula
    does not single biases out, but the authors' released cuda-convnet code applies
    weight decay to weights only, so that is the default.
    """
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    biases = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        dict(name="weights", params=weights, weight_decay=weight_decay),
        dict(name="biases", params=biases, weight_decay=weight_decay if decay_biases else 0.0),
    ]
    groups = [g for g in groups if g["params"]]
    if rule == "paper":
        return PaperSGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if rule == "pytorch":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    raise ValueError(f"Unknown optimizer rule {rule!r}: use 'paper' or 'pytorch'.")
