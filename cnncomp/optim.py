"""Optimizers and learning-rate schedules for ``compile(..., training=True)``.

An optimizer here is a description, not a loop: it names the fused update op the
differentiate pass puts after each parameter's gradient, that op's attributes and the
state tensors it keeps per parameter. Formulas are PyTorch's (``torch.optim``). A
schedule maps the epoch (a float: fractions are mid-epoch) to a learning rate; the
Trainer writes it into the graph's ``optimizer.hyper`` array before each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .ops import AdagradAttrs, AdamAttrs, Op, SgdAttrs


class Optimizer:
    """Base: ``op`` is the update op; ``state_names`` the per-parameter state tensors."""
    op: Op
    lr: float

    def attrs(self) -> Any:
        raise NotImplementedError

    def state_names(self) -> tuple[str, ...]:
        return ()

    def config(self) -> dict:
        """Plain-data description (saved in checkpoints)."""
        d = dict(self.__dict__)
        d["type"] = type(self).__name__
        if d.get("schedule") is not None:
            d["schedule"] = d["schedule"].config()
        return d

    def _check(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {self.lr}")


@dataclass
class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, weight decay, Nesterov."""
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    schedule: Optional["Schedule"] = None
    op: Op = field(default=Op.SGD_UPDATE, init=False, repr=False)

    def __post_init__(self):
        self._check()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening 0")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("SGD: momentum and weight_decay must be >= 0")

    def attrs(self) -> SgdAttrs:
        return SgdAttrs(self.momentum, self.dampening, self.weight_decay, self.nesterov)

    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()


@dataclass
class Adam(Optimizer):
    """torch.optim.Adam (bias-corrected; weight decay is L2 added to the gradient)."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: Optional["Schedule"] = None
    op: Op = field(default=Op.ADAM_UPDATE, init=False, repr=False)

    def __post_init__(self):
        self._check()
        self.betas = tuple(self.betas)
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"Adam: betas must be in [0, 1), got {self.betas}")

    def attrs(self) -> AdamAttrs:
        return AdamAttrs(self.betas[0], self.betas[1], self.eps, self.weight_decay)

    def state_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")


@dataclass
class Adagrad(Optimizer):
    """torch.optim.Adagrad (initial accumulator 0)."""
    lr: float = 1e-2
    eps: float = 1e-10
    weight_decay: float = 0.0
    lr_decay: float = 0.0
    schedule: Optional["Schedule"] = None
    op: Op = field(default=Op.ADAGRAD_UPDATE, init=False, repr=False)

    def __post_init__(self):
        self._check()

    def attrs(self) -> AdagradAttrs:
        return AdagradAttrs(self.eps, self.weight_decay, self.lr_decay)

    def state_names(self) -> tuple[str, ...]:
        return ("sum",)


# ------------------------------------------------------------------ schedules

class Schedule:
    def __call__(self, base_lr: float, epoch: float) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        return {"type": type(self).__name__, **self.__dict__}


@dataclass
class StepLR(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs (torch StepLR)."""
    step_size: int
    gamma: float = 0.1

    def __call__(self, base_lr: float, epoch: float) -> float:
        return base_lr * self.gamma ** (int(epoch) // self.step_size)


@dataclass
class CosineLR(Schedule):
    """Cosine annealing from the base rate to ``eta_min`` over ``t_max`` epochs, evaluated
    per step (torch CosineAnnealingLR's closed form)."""
    t_max: float
    eta_min: float = 0.0

    def __call__(self, base_lr: float, epoch: float) -> float:
        t = min(epoch, self.t_max)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.t_max)) / 2


_SCHEDULES = {"StepLR": StepLR, "CosineLR": CosineLR}
_OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "Adagrad": Adagrad}


def from_config(d: dict) -> Optimizer:
    """Rebuild an optimizer from ``Optimizer.config()`` (checkpoint loading)."""
    d = dict(d)
    cls = _OPTIMIZERS[d.pop("type")]
    sched = d.pop("schedule", None)
    if sched is not None:
        sched = dict(sched)
        sched = _SCHEDULES[sched.pop("type")](**sched)
    d.pop("op", None)
    return cls(**d, schedule=sched)
