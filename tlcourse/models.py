"""Models: a pretrained torchvision backbone as a feature extractor with a new head that outputs logits.

No Softmax inside the model: ``F.cross_entropy`` applies log-softmax itself, and a Softmax before
it (as in the original notebook) squashes the gradients. :func:`predict_proba` gives probabilities."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torchvision
from torch import nn

from .data import TransformSettings
from .errors import WeightsUnavailableError  # noqa: F401 - WeightsUnavailableError: lessons import it here
from .weights import SUPPORTED_BACKBONES, load_state_dict, weights_enum, weights_path  # noqa: F401 - re-exported

#: Attribute names under which torchvision classification models keep their classifier block.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def model_device(model: nn.Module) -> torch.device:
    """The device a model's parameters are on (the one place that asks)."""
    return next(model.parameters()).device


@torch.no_grad()
def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A batch's logits in eval mode, without gradients, on the CPU as float32."""
    with eval_mode(model):
        return model(x.to(model_device(model))).float().cpu()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (dropout off, BatchNorm frozen), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _split_backbone(model: nn.Module) -> nn.Module:
    """Replace the model's classifier block by ``Identity`` so it outputs its features."""
    for name in _HEAD_ATTRIBUTES:
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())
            return model
    raise ValueError(f"Don't know where {type(model).__name__}'s classifier is (looked for {_HEAD_ATTRIBUTES}).")


@torch.no_grad()
def feature_size(backbone: nn.Module, crop: int = 224) -> int:
    """Length of the feature vector the backbone outputs for one ``3 x crop x crop`` image (measured)."""
    with eval_mode(backbone):  # a dummy forward must not touch BatchNorm running statistics
        return int(backbone(torch.zeros(1, 3, crop, crop)).flatten(1).shape[1])


class TransferClassifier(nn.Module):
    """A pretrained backbone (feature extractor) followed by a new head that outputs logits. Taught in lesson 2.

    Its constructor arguments (:meth:`arguments`: backbone, weights, input transform, head) are what a
    checkpoint stores. ``freeze()`` stops the backbone from learning, BatchNorm statistics included."""

    def __init__(self, backbone: nn.Module, n_features: int, n_classes: int, hidden: int | None = None,
                 dropout: float = 0.2, backbone_name: str = "", weights_name: str | None = None,
                 transform_settings: TransformSettings = TransformSettings()):
        super().__init__()
        self.backbone = backbone
        self.n_features, self.n_classes, self.hidden, self.dropout = n_features, n_classes, hidden, dropout
        self.backbone_name, self.weights_name, self.transform_settings = backbone_name, weights_name, transform_settings
        self.frozen = False
        self.update_batchnorm = True  # BatchNorm statistics follow train/eval mode once unfrozen
        layers: list[nn.Module] = [nn.Flatten(), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout)]
            n_features = hidden
        layers.append(nn.Linear(n_features, n_classes))  # logits: no Softmax here
        self.head = nn.Sequential(*layers)

    def arguments(self) -> dict[str, Any]:
        """The constructor arguments that describe this model (plain values, for a checkpoint)."""
        return {"backbone_name": self.backbone_name, "weights_name": self.weights_name, "n_classes": self.n_classes,
                "hidden": self.hidden, "dropout": self.dropout,
                "transform_settings": dataclasses.asdict(self.transform_settings)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output for a batch, flattened to ``N x n_features``."""
        return self.backbone(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def freeze(self) -> "TransferClassifier":
        """Freeze the backbone: no gradients, no weight updates, no BatchNorm statistics updates. Taught in lesson 3."""
        self.backbone.requires_grad_(False)
        self.frozen = True
        self.backbone.eval()
        return self

    def unfreeze(self, update_batchnorm: bool = True) -> "TransferClassifier":
        """Let the backbone learn again: all its parameters get gradients. Taught in lesson 4.

        ``update_batchnorm=False`` keeps BatchNorm's pretrained running statistics: those of small batches of a
        small dataset are noisy, and the later layers were trained on the others."""
        self.backbone.requires_grad_(True)
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
                if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)):
                    module.eval()
        return self


def build_model(n_classes: int, backbone: str = "mobilenet_v2", weights: str | None = "DEFAULT",
                hidden: int | None = None, dropout: float = 0.2, offline: bool = False) -> TransferClassifier:
    """Build a :class:`TransferClassifier` from a torchvision backbone name. Taught in lesson 2.

    ``weights="DEFAULT"``: the best ImageNet weights torchvision has (from the torch cache, downloaded
    unless ``offline``); ``None``: random weights (quick, for tests)."""
    enum = weights_enum(backbone, weights)
    model = rebuild({"backbone_name": backbone, "weights_name": None if enum is None else str(enum),
                     "n_classes": n_classes, "hidden": hidden, "dropout": dropout,
                     "transform_settings": dataclasses.asdict(TransformSettings.from_weights(enum))})
    if enum is not None:
        state = load_state_dict(enum, offline=offline)
        own = model.backbone.state_dict().keys()  # once: building a state dict is not free
        model.backbone.load_state_dict({k: v for k, v in state.items() if k in own})
    return model


def rebuild(arguments: dict[str, Any]) -> TransferClassifier:
    """A model with these :meth:`TransferClassifier.arguments` and untrained weights (a checkpoint fills them)."""
    arguments = dict(arguments)
    settings = TransformSettings(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in arguments.pop("transform_settings").items()})
    backbone = _split_backbone(torchvision.models.get_model(arguments["backbone_name"], weights=None))
    return TransferClassifier(backbone, feature_size(backbone, settings.crop), transform_settings=settings,
                              **arguments)


#: Weight decay of both recipes' AdamW optimizer: AdamW's own default. AdamW is Adam (the
#: original notebook's optimizer) with the decay applied to the weights directly instead of being
#: added to the gradient, where Adam's per-parameter scaling would weaken it (Loshchilov & Hutter).
WEIGHT_DECAY = 0.01


def param_groups(model: TransferClassifier, head_lr: float, backbone_lr: float,
                 weight_decay: float = WEIGHT_DECAY) -> list[dict[str, Any]]:
    """Optimizer parameter groups for discriminative learning rates: the head at ``head_lr``, the
    pretrained backbone at the smaller ``backbone_lr``, both with ``weight_decay`` (AdamW's default);
    frozen parameters are left out. Taught in lesson 4."""
    groups = [{"params": [p for p in part.parameters() if p.requires_grad], "lr": lr, "name": name,
               "weight_decay": weight_decay}
              for name, part, lr in (("head", model.head, head_lr), ("backbone", model.backbone, backbone_lr))]
    return [g for g in groups if g["params"]]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``). Taught in lesson 2."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch: softmax of :func:`logits_of` (eval mode, no gradients, CPU).
    Taught in lesson 5."""
    return torch.softmax(logits_of(model, x), dim=1)
