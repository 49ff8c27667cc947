"""Checker for lesson 3's coding exercise: freeze the backbone up to a given block, BatchNorm included."""

from __future__ import annotations

import random
from typing import Callable

import torch
from torch import nn

from tlcourse.exercises import attempt
from tlcourse.models import build_model


def check_freeze_up_to(freeze_up_to: Callable) -> str:
    """Call ``freeze_up_to(model, block)`` on a fresh MobileNetV2 model (random weights, 3-5 classes) in
    training mode, as a training loop leaves it, then run a batch through it. Blocks ``0 .. block - 1`` of
    ``model.backbone.features`` must get no gradients and keep their BatchNorm statistics; the later blocks
    and the head must still learn, in training mode. Used in lesson 3."""
    torch.manual_seed(random.randrange(1000))
    model = build_model(random.randint(3, 5), "mobilenet_v2", weights=None).train()
    blocks = model.backbone.features
    block = random.randint(3, len(blocks) - 3)
    result = attempt(freeze_up_to, model, block)
    assert result is model, "return the model you were given (changed in place), as freeze() in this lesson does."
    for i, part in enumerate(blocks):
        learns = {p.requires_grad for p in part.parameters()}
        if i < block:
            assert learns == {False}, f"block {i} is before block {block}, so it should be frozen, but some of its parameters still require gradients."
        else:
            assert learns == {True}, f"block {i} is block {block} or later: it should still learn (requires_grad True)."
    assert all(p.requires_grad for p in model.head.parameters()), "the head must still learn: leave its parameters alone."
    batchnorms = [(i, m) for i, part in enumerate(blocks) for m in part.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for _, m in batchnorms]
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64))
    for (i, m), mean in zip(batchnorms, before):
        moved = not torch.equal(m.running_mean, mean)
        if i < block:
            assert not m.training and not moved, (
                f"your BatchNorm layers still update their running mean in block {i}, which is frozen: "
                "put the frozen blocks in eval mode too.")
        else:
            assert m.training, f"block {i} should stay in training mode (it still learns); only the frozen blocks go to eval mode."
    assert model.head.training, "the head should stay in training mode (its dropout is on while training)."
    return f"Correct: blocks 0-{block - 1} frozen, BatchNorm statistics included; blocks {block}-{len(blocks) - 1} and the head learn."
