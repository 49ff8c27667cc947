"""Models: a pretrained torchvision backbone as a feature extractor with a new classification head.

The head outputs *logits* (raw scores). There is no Softmax inside the model:
``F.cross_entropy`` applies log-softmax itself, and a Softmax before it (as in
the original notebook) squashes the gradients and slows learning. Use
:func:`predict_proba` when you want probabilities.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import nn

from .data import TransformSettings

#: Backbones the course is tested with; any torchvision classification model name also works.
SUPPORTED_BACKBONES = ("mobilenet_v2", "resnet18", "vgg11")

#: Attribute names under which torchvision classification models keep their classifier block.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


class WeightsUnavailableError(RuntimeError):
    """Raised when pretrained weights are neither cached nor downloadable."""


def weights_enum(backbone: str, weights: str | None = "DEFAULT"):
    """Return the torchvision weights enum member for ``backbone`` (``None`` for no weights)."""
    # Checked also for weights=None, so a typo in TLCOURSE_BACKBONE gets the same clear message.
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"Unknown backbone {backbone!r}. Use a torchvision classification model name, "
            f"for example one of {', '.join(SUPPORTED_BACKBONES)}."
        )
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(backbone)
    try:
        return enum[weights]
    except KeyError:
        raise ValueError(
            f"Unknown weights {weights!r} for {backbone}. Use one of: DEFAULT, "
            f"{', '.join(member.name for member in enum)}, or None for random weights."
        ) from None


def weights_path(weights) -> Path:
    """Where torchvision caches the file for ``weights``: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_state_dict(weights, timeout: float = 15.0) -> dict[str, torch.Tensor]:
    """Load the state dict for ``weights`` from the torch cache, downloading it if allowed.

    Without internet, a download would fail (or hang for minutes); this gives
    up after ``timeout`` seconds and says which file is missing and where it
    was looked for. ``TLCOURSE_OFFLINE=1`` skips the download attempt.
    """
    path = weights_path(weights)
    if not path.is_file():
        offline = os.environ.get("TLCOURSE_OFFLINE", "").lower() in {"1", "true", "yes"}
        hint = (
            f"Pretrained weights {path.name} are not in the torch cache ({path.parent}, "
            f"from TORCH_HOME={os.environ.get('TORCH_HOME', '<unset, default ~/.cache/torch>')}). "
            f"Fix: run `tlcourse prefetch-weights` on a machine with internet, or copy {path.name} "
            f"into {path.parent}, or set TORCH_HOME to a folder whose hub/checkpoints/ holds it."
        )
        if offline:
            raise WeightsUnavailableError(hint + " (TLCOURSE_OFFLINE is set, so no download was tried.)")
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except (URLError, OSError, TimeoutError) as error:
            raise WeightsUnavailableError(f"{hint} (Download from {weights.url} failed: {error})") from error
        finally:
            socket.setdefaulttimeout(old)
    return torch.load(path, map_location="cpu", weights_only=True)


def _split_backbone(model: nn.Module) -> nn.Module:
    """Replace the model's classifier block by ``Identity`` so it outputs its features."""
    for name in _HEAD_ATTRIBUTES:
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())
            return model
    raise ValueError(f"Don't know where {type(model).__name__}'s classifier is (looked for {_HEAD_ATTRIBUTES}).")


@torch.no_grad()
def feature_size(backbone: nn.Module, crop: int = 224) -> int:
    """Length of the feature vector the backbone outputs for one ``3 x crop x crop`` image (computed, not hard-coded)."""
    was_training = backbone.training
    backbone.eval()  # eval: a dummy forward must not touch BatchNorm running statistics
    out = backbone(torch.zeros(1, 3, crop, crop))
    backbone.train(was_training)
    return int(out.flatten(1).shape[1])


class TransferClassifier(nn.Module):
    """A pretrained backbone (feature extractor) followed by a new head that outputs logits.

    Build one with :func:`build_model`. ``freeze()`` stops the backbone from
    learning: its parameters get no gradients and its BatchNorm layers stay in
    eval mode (so their running statistics do not change either), even when
    the whole model is put in train mode.
    """

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int, hidden: int | None = None,
                 dropout: float = 0.2):
        super().__init__()
        self.backbone = backbone
        self.n_features = n_features
        self.n_classes = n_classes
        self.frozen = False
        self.update_batchnorm = True  # BatchNorm statistics follow train/eval mode once unfrozen
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
            n_features = hidden
        layers.append(nn.Linear(n_features, n_classes))  # logits: no Softmax here
        self.head = nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output for a batch, flattened to ``N x n_features``."""
        return self.backbone(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def freeze(self) -> "TransferClassifier":
        """Freeze the backbone: no gradients, no weight updates, no BatchNorm statistics updates."""
        for param in self.backbone.parameters():
            param.requires_grad = False
        self.frozen = True
        self.backbone.eval()
        return self

    def unfreeze(self, update_batchnorm: bool = True) -> "TransferClassifier":
        """Let the backbone learn again: all its parameters get gradients.

        ``update_batchnorm=False`` keeps the backbone's BatchNorm layers in eval
        mode: their scale and shift still learn, but their running mean and
        variance stay the pretrained ones. That is the usual choice when
        fine-tuning on a small dataset with small batches: statistics from 32
        photos are noisy, and in train mode every batch would be normalised with
        them instead of with the statistics the later layers were trained on.
        """
        for param in self.backbone.parameters():
            param.requires_grad = True
        self.frozen = False
        self.update_batchnorm = update_batchnorm
        return self.train(self.training)

    def train(self, mode: bool = True) -> "TransferClassifier":
        # requires_grad=False stops weight updates, but BatchNorm in train mode would
        # still update its running mean/variance from every batch: keep it in eval.
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        elif not self.update_batchnorm:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


def build_model(
    n_classes: int,
    backbone: str = "mobilenet_v2",
    weights: str | None = "DEFAULT",
    hidden: int | None = None,
    dropout: float = 0.2,
) -> TransferClassifier:
    """Build a :class:`TransferClassifier` from a torchvision backbone name.

    ``weights="DEFAULT"`` loads the best ImageNet weights torchvision has for
    that backbone through the weights-enum API (from the torch cache, see
    :func:`load_state_dict`); ``weights=None`` gives random weights (quick to
    build, for tests). The feature size is measured with a dummy forward pass.
    """
    enum = weights_enum(backbone, weights)
    model = torchvision.models.get_model(backbone, weights=None)
    if enum is not None:
        model.load_state_dict(load_state_dict(enum))
    crop = TransformSettings.from_weights(enum).crop
    backbone_net = _split_backbone(model)
    n_features = feature_size(backbone_net, crop)
    classifier = TransferClassifier(backbone_net, n_features, n_classes, hidden=hidden, dropout=dropout)
    classifier.backbone_name = backbone
    classifier.weights_name = None if enum is None else str(enum)
    classifier.transform_settings = TransformSettings.from_weights(enum)
    return classifier


def param_groups(model: TransferClassifier, head_lr: float, backbone_lr: float,
                 weight_decay: float = 0.01) -> list[dict[str, Any]]:
    """Optimizer parameter groups for discriminative learning rates.

    The new head learns at ``head_lr``; the pretrained backbone at the smaller
    ``backbone_lr`` so its features change only a little. Every trainable
    parameter is in exactly one group; frozen parameters are left out.
    ``weight_decay`` (default: AdamW's, as the recipes use) is set in both groups.
    """
    groups = [
        {"params": [p for p in model.head.parameters() if p.requires_grad], "lr": head_lr, "name": "head"},
        {"params": [p for p in model.backbone.parameters() if p.requires_grad], "lr": backbone_lr,
         "name": "backbone"},
    ]
    for group in groups:
        group["weight_decay"] = weight_decay
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch: softmax of the logits, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs = torch.softmax(model(x.to(device)), dim=1)
    model.train(was_training)
    return probs
