"""Grad-CAM (Selvaraju et al., 2017): where in a photo the model looked for its answer.

The last convolutional block still has a spatial map (7 x 7 for a 224 px input) of channels that each
respond to some pattern. Grad-CAM weighs each channel by how much the class's logit grows with it
(the gradient, averaged over the map), sums the weighted channels and keeps the positive part: the
regions that speak *for* the class. A forward hook keeps the block's output, a backward hook its gradient."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import eval_mode, model_device


def last_conv_block(model: nn.Module) -> nn.Module:
    """The backbone's last convolutional block: ``features[-1]`` (MobileNet, VGG, EfficientNet, DenseNet...),
    ``layer4`` (ResNet), else the last ``Conv2d``."""
    backbone = getattr(model, "backbone", model)
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential) and len(features):
        return features[-1]
    if isinstance(getattr(backbone, "layer4", None), nn.Module):
        return backbone.layer4
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(backbone).__name__} has no convolutional layer for Grad-CAM; pass layer=")
    return convs[-1]


class GradCAM:
    """Grad-CAM maps of ``model`` at ``layer`` (default :func:`last_conv_block`). Taught in lesson 8.

    ``GradCAM(model)(x)`` gives one map per photo for its predicted class (or ``target``), at the layer's
    resolution; :func:`upsample` brings them to the photo's size. The model's weights and modes are left
    as they were (the gradient is taken with respect to the block's output, not its weights)."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None):
        self.model = model
        self.layer = layer if layer is not None else last_conv_block(model)
        self.activations: torch.Tensor | None = None
        self.gradients: torch.Tensor | None = None

    def _keep_activations(self, module, inputs, output) -> None:
        self.activations = output.detach()

    def _keep_gradients(self, module, grad_input, grad_output) -> None:
        self.gradients = grad_output[0].detach()

    def __call__(self, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Maps ``N x h x w`` (non-negative) for a normalised batch ``x``; ``target``: a class index per
        photo, one for all, or ``None`` for each photo's predicted class."""
        device = model_device(self.model)
        # The input asks for gradients so that a frozen backbone's block output has one too.
        x = x.to(device).detach().requires_grad_(True)
        handles = [self.layer.register_forward_hook(self._keep_activations),
                   self.layer.register_full_backward_hook(self._keep_gradients)]
        try:
            with eval_mode(self.model), torch.enable_grad():
                logits = self.model(x)
                if target is None:
                    target = logits.argmax(1)
                target = torch.as_tensor(target, device=logits.device).expand(len(x))
                # Each photo's own class logit (eval mode: photos do not mix), differentiated w.r.t. the input
                # only: the hooks see the block's gradient on the way, and no parameter's .grad is written.
                torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), x)
        finally:
            for handle in handles:
                handle.remove()
        weights = self.gradients.mean(dim=(2, 3), keepdim=True)  # one weight per channel
        return F.relu((weights * self.activations).sum(1))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps ``N x h x w`` resized (bilinear) to ``size`` = ``(height, width)`` and scaled to [0, 1] per map."""
    maps = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    top = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return maps / top


def show_gradcam(image: torch.Tensor | np.ndarray, heatmap: torch.Tensor | np.ndarray, ax=None,
                 title: str | None = None, alpha: float = 0.45):
    """Draw a photo (``H x W x 3`` in [0, 1], or ``3 x H x W``) with a Grad-CAM map of the same size on top."""
    import matplotlib.pyplot as plt

    image, heatmap = np.asarray(image, dtype=np.float32), np.asarray(heatmap, dtype=np.float32)
    if image.ndim == 3 and image.shape[0] == 3:
        image = image.transpose(1, 2, 0)
    ax = ax or plt.subplots(figsize=(3, 3))[1]
    ax.imshow(image)
    ax.imshow(heatmap, cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return ax
