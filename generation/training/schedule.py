"""The optimizer and its learning-rate schedule: AdamW, linear warm-up, then cosine decay to zero.

Warm-up matters most for LoRA's freshly initialised B matrices and for fp16, where a full learning rate on the
first steps can overflow; the cosine tail lets the last steps settle rather than stop at full speed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """The share of the peak learning rate at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(
    params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float, warmup: int, total: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup=warmup, total=total))
    return optimizer, scheduler
