"""Models: a pretrained torchvision backbone as a feature extractor with a new head that outputs logits.

No Softmax inside the model: ``F.cross_entropy`` applies log-softmax itself, and a Softmax before
it (as in the original notebook) squashes the gradients. :func:`predict_proba` gives probabilities.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torchvision
from torch import nn

from .data import TransformSettings
from .errors import DataError, WeightsUnavailableError

#: Backbones the course is tested with; any torchvision classification model name also works.
SUPPORTED_BACKBONES = ("mobilenet_v2", "resnet18", "vgg11")

#: Attribute names under which torchvision classification models keep their classifier block.
_HEAD_ATTRIBUTES = ("fc", "classifier", "heads", "head")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``model`` in eval mode (dropout off, BatchNorm frozen), then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def weights_enum(backbone: str, weights: str | None = "DEFAULT"):
    """Return the torchvision weights enum member for ``backbone`` (``None`` for no weights)."""
    # Checked also for weights=None, so a typo in TLCOURSE_BACKBONE gets the same clear message.
    if backbone not in torchvision.models.list_models(module=torchvision.models):
        raise DataError(
            f"Unknown backbone {backbone!r}. Use a torchvision classification model name, "
            f"for example one of {', '.join(SUPPORTED_BACKBONES)}."
        )
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(backbone)
    try:
        return enum[weights]
    except KeyError:
        raise DataError(
            f"Unknown weights {weights!r} for {backbone}. Use one of: DEFAULT, "
            f"{', '.join(member.name for member in enum)}, or None for random weights."
        ) from None


def weights_path(weights) -> Path:
    """Where torchvision caches the file for ``weights``: ``$TORCH_HOME/hub/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_state_dict(weights, timeout: float = 15.0, offline: bool = False) -> dict[str, torch.Tensor]:
    """Load the state dict for ``weights`` from the torch cache, downloading it unless ``offline``
    (giving up after ``timeout`` seconds); the error names the file and where it was looked for.
    """
    path = weights_path(weights)
    if not path.is_file():
        hint = (
            f"Pretrained weights {path.name} are not in the torch cache ({path.parent}, "
            f"from TORCH_HOME={os.environ.get('TORCH_HOME', '<unset, default ~/.cache/torch>')}). "
            f"Fix: run `tlcourse prefetch-weights` on a machine with internet, or copy {path.name} "
            f"into {path.parent}, or set TORCH_HOME to a folder whose hub/checkpoints/ holds it."
        )
        if offline:
            raise WeightsUnavailableError(hint + " (TLCOURSE_OFFLINE is set, so no download was tried.)")
        from .weights import DownloadError, download_weights_file

        try:
            download_weights_file(weights.url, path, timeout=timeout, progress=False)
        except DownloadError as error:
            raise WeightsUnavailableError(f"{hint} (Download from {weights.url} failed: {error})") from error
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
    with eval_mode(backbone):  # a dummy forward must not touch BatchNorm running statistics
        return int(backbone(torch.zeros(1, 3, crop, crop)).flatten(1).shape[1])


class TransferClassifier(nn.Module):
    """A pretrained backbone (feature extractor) followed by a new head that outputs logits.

    The model knows what it is: its constructor arguments (:meth:`arguments`) name the backbone,
    its weights, the input transform and the head's shape; a checkpoint stores them. ``freeze()``
    stops the backbone from learning, BatchNorm statistics included, even in train mode.
    """

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
        """Freeze the backbone: no gradients, no weight updates, no BatchNorm statistics updates."""
        self.backbone.requires_grad_(False)
        self.frozen = True
        self.backbone.eval()
        return self

    def unfreeze(self, update_batchnorm: bool = True) -> "TransferClassifier":
        """Let the backbone learn again: all its parameters get gradients.

        ``update_batchnorm=False`` keeps BatchNorm's running statistics the pretrained ones: those
        of small batches of a small dataset are noisy, and the later layers were trained on the others.
        """
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


def build_model(
    n_classes: int,
    backbone: str = "mobilenet_v2",
    weights: str | None = "DEFAULT",
    hidden: int | None = None,
    dropout: float = 0.2,
    offline: bool = False,
) -> TransferClassifier:
    """Build a :class:`TransferClassifier` from a torchvision backbone name.

    ``weights="DEFAULT"``: the best ImageNet weights torchvision has (from the torch cache, downloaded
    unless ``offline``); ``None``: random weights (quick, for tests).
    """
    enum = weights_enum(backbone, weights)
    model = rebuild({"backbone_name": backbone, "weights_name": None if enum is None else str(enum),
                     "n_classes": n_classes, "hidden": hidden, "dropout": dropout,
                     "transform_settings": dataclasses.asdict(TransformSettings.from_weights(enum))})
    if enum is not None:
        state = load_state_dict(enum, offline=offline)
        model.backbone.load_state_dict({k: v for k, v in state.items() if k in model.backbone.state_dict()})
    return model


def rebuild(arguments: dict[str, Any]) -> TransferClassifier:
    """A model with these :meth:`TransferClassifier.arguments` and untrained weights (a checkpoint fills them)."""
    arguments = dict(arguments)
    settings = TransformSettings(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in arguments.pop("transform_settings").items()})
    backbone = _split_backbone(torchvision.models.get_model(arguments["backbone_name"], weights=None))
    return TransferClassifier(backbone, feature_size(backbone, settings.crop), transform_settings=settings,
                              **arguments)


def param_groups(model: TransferClassifier, head_lr: float, backbone_lr: float,
                 weight_decay: float = 0.01) -> list[dict[str, Any]]:
    """Optimizer parameter groups for discriminative learning rates: the head at ``head_lr``, the
    pretrained backbone at the smaller ``backbone_lr``; frozen parameters are left out. Both groups get
    ``weight_decay`` (AdamW's default, as both recipes use).
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
    with eval_mode(model):
        return torch.softmax(model(x.to(next(model.parameters()).device)), dim=1)
