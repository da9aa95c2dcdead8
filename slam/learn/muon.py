"""Muon, our own: momentum, then Newton–Schulz orthogonalisation of each 2-D update.

For a weight matrix W (convolution kernels are flattened to (out, in*k*k)), Muon keeps
a momentum buffer ``m = mu m + g`` and steps along ``orth(g + mu m)`` (Nesterov), where
``orth(G)`` approximates ``U V^T`` of ``G = U S V^T`` by a few Newton–Schulz iterations
of the odd polynomial ``a X + b (X X^T) X + c (X X^T)^2 X``. The quintic coefficients
(3.4445, -4.7750, 2.0315) push all singular values into about [0.7, 1.2] in five steps;
(1.5, -0.5, 0) is the classic cubic iteration, which converges to ``U V^T`` exactly.
The update is scaled by ``0.2 sqrt(max(rows, cols))`` so its RMS matches AdamW's and
the same learning rate and decoupled weight decay serve both.

:func:`make_optimizer` puts hidden 2-D weights on Muon and everything else (biases,
norms, the stem and the output layer) on :class:`torch.optim.AdamW`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

QUINTIC = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)


def newton_schulz(G: Tensor, steps: int = 5, coefficients: tuple[float, float, float] = QUINTIC,
                  eps: float = 1e-7) -> Tensor:
    """Approximate orthogonal polar factor ``U V^T`` of ``G`` (M, N), same shape.

    ``G`` is first scaled by its Frobenius norm so every singular value is <= 1.
    """
    if G.ndim != 2:
        raise ValueError(f"newton_schulz needs a matrix, got shape {tuple(G.shape)}")
    a, b, c = coefficients
    X = G.to(torch.float32)
    transpose = X.shape[0] > X.shape[1]
    if transpose:
        X = X.T
    X = X / (X.norm() + eps)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return (X.T if transpose else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon for parameters of two or more dimensions (flattened to 2-D per update).

    ``lr`` learning rate, ``momentum`` mu, ``nesterov``, ``weight_decay`` decoupled (as
    AdamW: ``W -= lr * wd * W``), ``ns_steps`` Newton–Schulz iterations.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 momentum: float = 0.95, nesterov: bool = True, weight_decay: float = 0.0,
                 ns_steps: int = 5) -> None:
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(f"invalid lr {lr} or momentum {momentum}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                    "weight_decay": weight_decay, "ns_steps": ns_steps}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.ndim < 2:
                    raise ValueError("Muon takes matrices only; put vectors on AdamW")
                g = p.grad.reshape(p.shape[0], -1)
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(g)
                m = state["momentum"]
                m.mul_(group["momentum"]).add_(g)
                direction = g.add(m, alpha=group["momentum"]) if group["nesterov"] else m
                update = newton_schulz(direction, group["ns_steps"])
                update *= 0.2 * max(update.shape) ** 0.5
                p.mul_(1.0 - group["lr"] * group["weight_decay"])
                p.add_(update.view_as(p), alpha=-group["lr"])
        return loss


class Combined:
    """Several optimisers stepped together (Muon for matrices, AdamW for the rest).

    Its ``param_groups`` are theirs, so a learning-rate schedule drives both.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for o, s in zip(self.optimizers, state_dict["optimizers"]):
            o.load_state_dict(s)


Optimizer = torch.optim.Optimizer | Combined


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                   keep_on_adamw: set[int] | None = None) -> Optimizer:
    """``adamw``: AdamW on everything (no decay on vectors). ``muon``: Muon on the
    matrices except ``keep_on_adamw`` (ids), AdamW on the rest."""
    params = [p for p in model.parameters() if p.requires_grad]
    vectors = [p for p in params if p.ndim < 2]
    matrices = [p for p in params if p.ndim >= 2]
    if name == "adamw":
        return torch.optim.AdamW([{"params": matrices, "weight_decay": weight_decay},
                                  {"params": vectors, "weight_decay": 0.0}], lr=lr)
    if name != "muon":
        raise ValueError(f"unknown optimiser {name!r}; use adamw or muon")
    keep = keep_on_adamw or set()
    hidden = [p for p in matrices if id(p) not in keep]
    other = [p for p in matrices if id(p) in keep]
    adamw = torch.optim.AdamW([{"params": other, "weight_decay": weight_decay},
                               {"params": vectors, "weight_decay": 0.0}], lr=lr)
    return Combined([Muon(hidden, lr=lr, weight_decay=weight_decay), adamw])
