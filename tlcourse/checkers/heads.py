"""Checker for lesson 2's coding exercise: ResNet18 with a new head for k classes."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tlcourse.exercises import attempt
from tlcourse.models import build_model, count_parameters


def check_classifier(classifier_for: Callable) -> str:
    """Call ``classifier_for(k, weights=None)`` for two fresh class counts and compare it with the package's
    ``build_model(k, "resnet18", weights=None)``: one logit per class for photos of two sizes, no softmax,
    and the same number of parameters (the backbone and one ``Linear(512, k)``). Used in lesson 2."""
    for k in torch.randperm(7)[:2].add(3).tolist():  # 3 to 9 classes: never ImageNet's 1000, never just 2
        model = attempt(classifier_for, k, weights=None)
        assert isinstance(model, nn.Module), f"classifier_for({k}) returned {type(model).__name__}, not an nn.Module."
        model.eval()

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x)

        forward.__name__ = "model"
        for size in (64, 96):
            with torch.no_grad():
                logits = attempt(forward, torch.randn(2, 3, size, size))
            assert isinstance(logits, torch.Tensor), f"your model returned {type(logits).__name__}, not a tensor of logits."
            assert tuple(logits.shape) == (2, k), (
                f"for a batch of 2 photos ({size} x {size}) and {k} classes your model gives shape {tuple(logits.shape)}; "
                f"it should give (2, {k}), one logit per class" + (": ImageNet's 1000-class layer is still there."
                                                                    if logits.shape[-1] == 1000 else "."))
            sums = logits.sum(dim=1)
            assert not (logits.min() >= 0 and torch.allclose(sums, torch.ones_like(sums), atol=1e-4)), \
                "your model outputs probabilities (each row sums to 1): return logits, with no softmax at the end."
        package = count_parameters(build_model(k, "resnet18", weights=None))
        ours = count_parameters(model)
        assert ours == package, (
            f"your model has {ours:,} parameters; ResNet18's convolutional part and one Linear(512, {k}) have {package:,}. "
            + ("Did you keep ImageNet's 1000-class layer and add yours after it?" if ours > package else
               "Is part of ResNet18 missing?"))
    return f"Correct: one logit per class ({k} classes), any photo size, {package:,} parameters as build_model's."
