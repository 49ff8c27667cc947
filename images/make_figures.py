"""Draw the lessons' figures from the models themselves and save them as PNGs in ``images/``.

Run it with ``make figures`` (or ``python images/make_figures.py``). Nothing here is
hand-drawn: layer types, channel counts and output shapes come from torchvision's
models and a forward pass, so the pictures stay true if torchvision changes.

Figures:

* ``vgg11.png``: VGG11's layers as ImageNet trained them, each with its output
  shape (the original notebook's architecture diagram, recomputed).
* ``feature_extractor.png``: how the course turns VGG11 into a dogs-vs-hotdogs
  classifier: keep the convolutional part (the feature extractor), drop the
  1000-class classifier, add a new head that outputs 2 logits.
* ``two_methods.png``: which parameters learn, and how fast, in method 1
  (weight freezing) and method 2 (discriminative learning rates), with the
  parameter counts of the course's default backbone.

Only ``weights=None`` models are built: shapes do not depend on the weights, and
no download is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Polygon, Rectangle  # noqa: E402
from torch import nn  # noqa: E402

HERE = Path(__file__).resolve().parent

# One palette for every figure: layer kinds keep their colour across pictures.
COLORS = {
    "conv": "#4C72B0",
    "pool": "#DD8452",
    "avgpool": "#C9A227",
    "linear": "#55A868",
    "new": "#C44E52",
    "dropped": "#B8B8B8",
    "text": "#222222",
    "muted": "#666666",
}


@dataclass
class Block:
    """One drawn block: a layer (with its activation folded in) and the shape it outputs."""

    kind: str  # conv, pool, avgpool, linear
    title: str  # e.g. "conv 3x3, 64"
    shape: tuple[int, ...]  # output shape without the batch dimension


@torch.no_grad()
def vgg11_blocks() -> list[Block]:
    """Walk torchvision's VGG11 layer by layer, forwarding a 224x224 image to get each output shape.

    ReLU and Dropout change no shape, so they are folded into the layer before them
    and named in its title.
    """
    model = torchvision.models.vgg11(weights=None).eval()
    x = torch.zeros(1, 3, 224, 224)
    blocks: list[Block] = []
    layers = [("features", m) for m in model.features] + [("avgpool", model.avgpool), ("flatten", nn.Flatten())]
    layers += [("classifier", m) for m in model.classifier]
    for _, layer in layers:
        x = layer(x)
        shape = tuple(x.shape[1:])
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0]
            blocks.append(Block("conv", f"conv {k}x{k}, {layer.out_channels}\n+ ReLU", shape))
        elif isinstance(layer, nn.MaxPool2d):
            blocks.append(Block("pool", "max pool 2x2", shape))
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            blocks.append(Block("avgpool", "adaptive\navg pool", shape))
        elif isinstance(layer, nn.Linear):
            blocks.append(Block("linear", f"linear\n{layer.in_features}\u2192{layer.out_features}", shape))
        elif isinstance(layer, nn.Dropout) and blocks:
            blocks[-1].title += "\n+ dropout"
        # ReLU after a linear layer: fold into the title too; Flatten: shown by the shape change.
        elif isinstance(layer, nn.ReLU) and blocks and blocks[-1].kind == "linear":
            blocks[-1].title += "\n+ ReLU"
    return blocks


def _shape_text(shape: tuple[int, ...]) -> str:
    return "\u00d7".join(str(s) for s in shape)


def _cuboid(ax, x: float, y_mid: float, width: float, height: float, depth: float, color: str,
            alpha: float = 1.0, hatch: str | None = None) -> None:
    """A box seen slightly from above and the right: front face, top face, side face."""
    y0 = y_mid - height / 2
    dx, dy = depth * 0.6, depth * 0.45
    front = Rectangle((x, y0), width, height, facecolor=color, edgecolor="white", lw=0.8, alpha=alpha,
                      hatch=hatch)
    top = Polygon([(x, y0 + height), (x + dx, y0 + height + dy), (x + width + dx, y0 + height + dy),
                   (x + width, y0 + height)], closed=True, facecolor=color, edgecolor="white", lw=0.8,
                  alpha=alpha * 0.65)
    side = Polygon([(x + width, y0), (x + width + dx, y0 + dy), (x + width + dx, y0 + height + dy),
                    (x + width, y0 + height)], closed=True, facecolor=color, edgecolor="white", lw=0.8,
                   alpha=alpha * 0.8)
    for patch in (side, top, front):
        ax.add_patch(patch)


def _block_size(block: Block) -> tuple[float, float, float]:
    """Width, height, depth of a block: height follows the spatial size, width the channels."""
    if len(block.shape) == 3:  # C x H x W feature map
        channels, height, _ = block.shape
        return 0.12 + 0.055 * (channels / 64) ** 0.5 * 2, 0.55 + 2.6 * (height / 224) ** 0.6, 0.5
    # a vector: a thin tall bar whose height grows with its length
    n = block.shape[0]
    return 0.14, 0.5 + 0.32 * torch.log2(torch.tensor(float(n))).item() / 2, 0.12


def draw_vgg11(path: Path) -> Path:
    """``vgg11.png``: every layer of torchvision's VGG11 with its output shape."""
    blocks = vgg11_blocks()
    fig, ax = plt.subplots(figsize=(18, 5.6))
    gap = 0.62
    x, y_mid = 0.0, 0.0
    label_y, shape_dy = -1.95, 0.12  # titles below the tallest block; shapes just above each block
    # The input image.
    _cuboid(ax, x, y_mid, 0.12, 3.15, 0.5, "#8172B3")
    ax.text(x + 0.06, label_y, "input image", ha="center", va="top", fontsize=9, color=COLORS["text"])
    ax.text(x + 0.06, 3.15 / 2 + 0.225 + shape_dy, "3\u00d7224\u00d7224", ha="center", va="bottom",
            fontsize=8.5, color=COLORS["muted"])
    x += 0.12 + gap
    spans: dict[str, list[float]] = {}
    for block in blocks:
        width, height, depth = _block_size(block)
        _cuboid(ax, x, y_mid, width, height, depth, COLORS[block.kind])
        centre = x + width / 2
        ax.text(centre, label_y, block.title, ha="center", va="top", fontsize=8.5, color=COLORS["text"],
                linespacing=1.1)
        ax.text(centre + depth * 0.3, height / 2 + depth * 0.45 + shape_dy, _shape_text(block.shape),
                ha="center", va="bottom", fontsize=8.5, color=COLORS["muted"])
        part = {"conv": "features", "pool": "features"}.get(block.kind, block.kind)
        part = "classifier" if part == "linear" else part
        spans.setdefault(part, [x, x + width])[1] = x + width + depth * 0.6
        x += width + gap
    # Brackets naming torchvision's three parts: model.features, model.avgpool, model.classifier.
    notes = {
        "features": ("model.features", "the convolutional part: 8 conv layers, 5 max pools", COLORS["conv"]),
        "avgpool": ("avgpool", "", COLORS["avgpool"]),
        "classifier": ("model.classifier", "scores for 1000 ImageNet classes", COLORS["linear"]),
    }
    y = 2.55
    for part, (x0, x1) in spans.items():
        name, detail, color = notes[part]
        ax.plot([x0, x0, x1, x1], [y - 0.15, y, y, y - 0.15], color=color, lw=2)
        ax.text((x0 + x1) / 2, y + 0.42, name, ha="center", va="bottom", fontsize=11, color=color,
                fontweight="bold")
        ax.text((x0 + x1) / 2, y + 0.08, detail, ha="center", va="bottom", fontsize=9.5, color=color)
    total = sum(p.numel() for p in torchvision.models.vgg11(weights=None).parameters())
    ax.set_title(f"VGG11 (torchvision.models.vgg11), {total / 1e6:.1f} M parameters. "
                 "Numbers above each block: its output, channels\u00d7height\u00d7width",
                 fontsize=12.5, color=COLORS["text"], pad=8)
    ax.set_xlim(-0.3, x - gap + 0.5)
    ax.set_ylim(-3.0, 3.5)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, text_color: str = "white",
         fontsize: float = 11, dashed: bool = False, alpha: float = 1.0) -> None:
    patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", facecolor=color,
                           edgecolor=color if not dashed else COLORS["muted"], lw=1.5, alpha=alpha,
                           linestyle="--" if dashed else "-")
    ax.add_patch(patch)
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=text_color,
            linespacing=1.25)


def _arrow(ax, x0: float, y0: float, x1: float, y1: float, color: str = COLORS["text"]) -> None:
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=16, lw=1.6,
                                 color=color))


def _head_text(head: nn.Sequential) -> str:
    """Describe a TransferClassifier head from its layers, e.g. 'Flatten\\nDropout(p=0.2)\\nLinear 25088→2'."""
    parts = []
    for layer in head:
        if isinstance(layer, nn.Linear):
            parts.append(f"Linear {layer.in_features}\u2192{layer.out_features}")
        elif isinstance(layer, nn.Dropout):
            parts.append(f"Dropout(p={layer.p:g})")
        else:
            parts.append(type(layer).__name__)
    return "\n".join(parts)


def draw_feature_extractor(path: Path) -> Path:
    """``feature_extractor.png``: VGG11 on ImageNet (top) and the course's model built from it (bottom)."""
    from tlcourse.models import build_model, count_parameters

    vgg = torchvision.models.vgg11(weights=None)
    ours = build_model(2, "vgg11", weights=None)
    with torch.no_grad():
        feature_shape = tuple(vgg.avgpool(vgg.features(torch.zeros(1, 3, 224, 224))).shape[1:])
    n_features = ours.n_features
    n_backbone = count_parameters(ours.backbone)
    n_head = count_parameters(ours.head)
    n_old_head = sum(p.numel() for p in vgg.classifier.parameters())

    fig, ax = plt.subplots(figsize=(13, 6.2))
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.4, 6.6)
    ax.axis("off")

    # Top row: the pretrained model as it was trained.
    y = 4.3
    ax.text(0.1, 6.35, "Pretrained on ImageNet", fontsize=13, fontweight="bold", color=COLORS["text"])
    _box(ax, 0.1, y, 1.4, 1.2, "photo\n3\u00d7224\u00d7224", "#8172B3")
    _arrow(ax, 1.55, y + 0.6, 2.0, y + 0.6)
    _box(ax, 2.05, y, 3.3, 1.2, f"features + avgpool\n(conv layers)\n{n_backbone / 1e6:.1f} M parameters",
         COLORS["conv"])
    _arrow(ax, 5.4, y + 0.6, 5.85, y + 0.6)
    _box(ax, 5.9, y, 1.9, 1.2, f"activation maps\n{_shape_text(feature_shape)}\n= {n_features} numbers",
         "#EAEAF2", text_color=COLORS["text"], fontsize=10)
    _arrow(ax, 7.85, y + 0.6, 8.3, y + 0.6)
    _box(ax, 8.35, y, 2.6, 1.2, f"classifier\n3 linear layers\n{n_old_head / 1e6:.1f} M parameters",
         COLORS["dropped"], text_color=COLORS["text"])
    _arrow(ax, 11.0, y + 0.6, 11.45, y + 0.6)
    _box(ax, 11.5, y, 1.4, 1.2, "1000\nImageNet\nscores", COLORS["dropped"], text_color=COLORS["text"],
         fontsize=10)
    # Cross out the part we throw away.
    ax.plot([8.3, 12.95], [y - 0.1, y + 1.3], color=COLORS["new"], lw=2.5)
    ax.plot([8.3, 12.95], [y + 1.3, y - 0.1], color=COLORS["new"], lw=2.5)
    ax.text(10.6, y - 0.35, "dropped: it answers ImageNet's question, not ours", ha="center", va="top",
            fontsize=10, color=COLORS["new"])

    # Bottom row: our model, with the same backbone and a new head.
    y = 0.9
    ax.text(0.1, 2.95, "Our model (tlcourse.models.build_model)", fontsize=13, fontweight="bold",
            color=COLORS["text"])
    _box(ax, 0.1, y, 1.4, 1.2, "photo\n3\u00d7224\u00d7224", "#8172B3")
    _arrow(ax, 1.55, y + 0.6, 2.0, y + 0.6)
    _box(ax, 2.05, y, 3.3, 1.2, "model.backbone\nsame layers, same\npretrained weights", COLORS["conv"])
    _arrow(ax, 5.4, y + 0.6, 5.85, y + 0.6)
    _box(ax, 5.9, y, 1.9, 1.2, f"feature vector\n{n_features} numbers\n(model.features(x))", "#EAEAF2",
         text_color=COLORS["text"], fontsize=10)
    _arrow(ax, 7.85, y + 0.6, 8.3, y + 0.6)
    _box(ax, 8.35, y, 2.6, 1.2, f"model.head (new)\n{_head_text(ours.head)}\n{n_head:,} parameters",
         COLORS["new"], fontsize=10)
    _arrow(ax, 11.0, y + 0.6, 11.45, y + 0.6)
    _box(ax, 11.5, y, 1.4, 1.2, "2 logits\ndog, hotdog", COLORS["new"], fontsize=10)
    ax.text(12.2, y - 0.2, "softmax only for probabilities;\nF.cross_entropy takes logits",
            ha="center", va="top", fontsize=9, color=COLORS["muted"])
    # Dashed link: the backbone is carried over unchanged.
    ax.annotate("", xy=(5.0, 2.15), xytext=(5.0, 4.25),
                arrowprops=dict(arrowstyle="-|>", lw=1.6, color=COLORS["conv"], linestyle="--"))
    ax.text(5.12, 3.55, "reused: this is the transfer", fontsize=10, color=COLORS["conv"], va="center")
    default = build_model(2, "mobilenet_v2", weights=None)
    ax.text(0.1, -0.05, f"Drawn for VGG11, as in the original notebook. The course's default backbone, MobileNetV2,\n"
            f"has the same structure: {count_parameters(default.backbone) / 1e6:.1f} M backbone parameters, "
            f"{default.n_features} features, a head of {count_parameters(default.head):,} parameters.",
            fontsize=9.5, color=COLORS["muted"])
    fig.tight_layout()
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path


def draw_two_methods(path: Path) -> Path:
    """``two_methods.png``: which parts learn in each method, with the default backbone's parameter counts."""
    from tlcourse.models import build_model, count_parameters

    import inspect

    from tlcourse.recipes import train_discriminative, train_frozen

    # The learning rates are the recipes' own defaults, so the picture matches the code.
    frozen_lr = inspect.signature(train_frozen).parameters["lr"].default
    disc = inspect.signature(train_discriminative).parameters
    head_lr, backbone_lr = disc["head_lr"].default, disc["backbone_lr"].default
    bn_note = "BatchNorm statistics updated" if disc["update_batchnorm"].default else "BatchNorm statistics kept"
    model = build_model(2, "mobilenet_v2", weights=None)
    n_backbone, n_head = count_parameters(model.backbone), count_parameters(model.head)
    fig, axes = plt.subplots(1, 2, figsize=(13, 2.7))
    panels = [
        ("Method 1: weight freezing", "frozen: requires_grad = False\nBatchNorm kept in eval mode\n"
         "no gradients, no updates", COLORS["dropped"], COLORS["text"], f"learns, lr = {frozen_lr:g}"),
        ("Method 2: discriminative learning rates",
         f"learns slowly: lr = {backbone_lr:g}\n({head_lr / backbone_lr:g}\u00d7 smaller than the head's)\n{bn_note}",
         "#8FB3DE", COLORS["text"], f"learns, lr = {head_lr:g}\n(after method 1)"),
    ]
    for ax, (title, backbone_text, backbone_color, text_color, head_text) in zip(axes, panels):
        ax.set_xlim(0, 6.4)
        ax.set_ylim(0.6, 2.4)
        ax.axis("off")
        ax.set_title(title, fontsize=13, fontweight="bold", color=COLORS["text"], loc="left")
        _box(ax, 0.1, 0.7, 3.7, 1.6, f"backbone (MobileNetV2)\n{n_backbone / 1e6:.2f} M parameters\n"
             + backbone_text, backbone_color, text_color=text_color, fontsize=10)
        _arrow(ax, 3.85, 1.5, 4.35, 1.5)
        _box(ax, 4.4, 0.7, 1.9, 1.6, f"new head\n{n_head:,} parameters\n{head_text}", COLORS["new"],
             fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path


def main() -> None:
    """Draw every figure into ``images/`` and print where each went."""
    import sys

    only = set(sys.argv[1:])  # e.g. `python images/make_figures.py vgg11.png` redraws one figure
    for draw, name in ((draw_vgg11, "vgg11.png"), (draw_feature_extractor, "feature_extractor.png"),
                       (draw_two_methods, "two_methods.png")):
        if only and name not in only:
            continue
        print("wrote", draw(HERE / name).relative_to(HERE.parent))


if __name__ == "__main__":
    main()
