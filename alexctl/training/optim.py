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
            if isinstance(lr, torch.Tensor):  # 0-d (hold_for_compile): multiplied in, never read as a float
                if weight_decay != 0:
                    torch._foreach_sub_(velocities, torch._foreach_mul(params, lr * weight_decay))
                torch._foreach_sub_(velocities, torch._foreach_mul(grads, lr))
            else:
                if weight_decay != 0:
                    torch._foreach_add_(velocities, params, alpha=-weight_decay * lr)
                torch._foreach_add_(velocities, grads, alpha=-lr)
            torch._foreach_add_(params, velocities)
        return loss


def hold_for_compile(optimizer: torch.optim.Optimizer) -> None:
    """Ready `optimizer` for a compiled step (../shared/spec/gpu-notes.md, "First contact"):

    - its momentum buffers are created now, zero, outside the compiled region: a buffer first allocated
      inside a CUDA-graphed function and mutated on later calls segfaults (pytorch#192748). A zero buffer
      gives the lazily created one's first step exactly (0.9 * 0 + g), for PaperSGD and torch.optim.SGD;
    - each group's learning rate becomes a 0-d tensor on the parameters' device, changed in place
      (LrSchedule.apply): Dynamo guards on a Python float, so each new rate recompiled the step, and the
      9th distinct value hit the recompile limit.

    The state dict still holds plain floats (checkpoints keep their format and load either way); loading one
    fills the held tensors in place. Call it before loading a checkpoint and before the first step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and group.get("momentum", 0) != 0:
                optimizer.state[p].setdefault(
                    "momentum_buffer", torch.zeros_like(p, memory_format=torch.preserve_format)
                )
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=group["params"][0].device)
    held = [group["lr"] for group in optimizer.param_groups]

    def as_floats(opt, state: dict) -> dict:
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
        return state

    def into_tensors(opt) -> None:
        for group, tensor in zip(opt.param_groups, held):
            tensor.fill_(float(group["lr"]))
            group["lr"] = tensor

    optimizer.register_state_dict_post_hook(as_floats)
    optimizer.register_load_state_dict_post_hook(into_tensors)


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
