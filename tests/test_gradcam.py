"""Grad-CAM: the package's hooks against captum's LayerGradCam (a trusted implementation) on small
models, for the predicted class and a given one; the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from tlcourse.gradcam import GradCAM, last_conv_block, show_gradcam, upsample
from tlcourse.models import TransferClassifier, build_model


def tiny_model() -> TransferClassifier:
    """A small convolutional backbone with a `features` block list, like torchvision's."""
    torch.manual_seed(0)
    backbone = nn.Module()
    backbone.features = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),
    )
    backbone.forward = lambda x: nn.functional.adaptive_avg_pool2d(backbone.features(x), 1)
    model = TransferClassifier(backbone, 16, 3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics: eval mode matters
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def captum_maps(model: nn.Module, layer: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    return LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True).squeeze(1).detach()


#: The layer Grad-CAM must use, by its name in each architecture (the docs of last_conv_block): the last
#: block of ``features`` (MobileNetV2's 320 -> 1280 convolution with its BatchNorm and ReLU6, the tiny model's
#: last block), ResNet's ``layer4``. Never a bare Conv2d before its BatchNorm.
NAMED_LAYER = {"tiny": "backbone.features.1", "mobilenet_v2": "backbone.features.18", "resnet18": "backbone.layer4"}
MAKERS = {"tiny": tiny_model,
          "mobilenet_v2": lambda: build_model(3, "mobilenet_v2", weights=None).eval(),
          "resnet18": lambda: build_model(3, "resnet18", weights=None).eval()}


@pytest.mark.parametrize("architecture", list(NAMED_LAYER))
def test_gradcam_uses_the_named_layer_and_agrees_with_captum_there(architecture):
    model = MAKERS[architecture]()
    named = model.get_submodule(NAMED_LAYER[architecture])
    size = 64 if architecture == "tiny" else 160
    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    cam = GradCAM(model)
    assert cam.layer is named, f"Grad-CAM hooks {cam.layer}, not {NAMED_LAYER[architecture]}"
    predicted = model(x).argmax(1)
    ours = cam(x)
    reference = captum_maps(model, named, x, predicted)  # captum at the named layer, not at cam.layer
    assert ours.shape == reference.shape and ours.shape[0] == 3
    assert reference.abs().max() > 0  # not an all-zero comparison
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    for target in (0, [2, 1, 0]):
        torch.testing.assert_close(cam(x, target=target), captum_maps(model, named, x, target),
                                   rtol=1e-4, atol=1e-6 * float(reference.abs().max()))


def test_the_fallback_is_the_last_conv2d_and_without_one_an_error_names_the_fix():
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6),
                             nn.AdaptiveAvgPool2d(1))
    model = TransferClassifier(backbone, 6, 2).eval()  # no `features`, no `layer4`
    assert last_conv_block(model) is model.get_submodule("backbone.2")
    torch.manual_seed(2)
    x = torch.randn(2, 3, 12, 12)
    reference = captum_maps(model, model.get_submodule("backbone.2"), x, model(x).argmax(1))
    assert reference.shape == (2, 8, 8) and reference.abs().max() > 0
    torch.testing.assert_close(GradCAM(model)(x), reference, rtol=1e-4, atol=1e-6 * float(reference.abs().max()))
    flat = TransferClassifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), 5, 2)
    with pytest.raises(ValueError, match="has no convolutional layer for Grad-CAM; pass layer="):
        last_conv_block(flat)
    layer = flat.get_submodule("backbone.1")
    assert GradCAM(flat, layer=layer).layer is layer  # the way out the error names


def test_gradcam_works_on_a_frozen_model_and_leaves_it_as_it_was():
    model = tiny_model().freeze()
    model.train()  # train mode outside: Grad-CAM must evaluate in eval mode and put it back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    maps = GradCAM(model)(x)
    assert maps.shape == (2, 16, 16) and (maps >= 0).all() and maps.sum() > 0
    assert model.training and not model.backbone.training  # frozen backbone stays in eval
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())  # the head's too: no .grad left for training
    assert not model.backbone.features[0][0].weight.requires_grad


def test_upsample_scales_each_map_to_one_and_the_photo_size():
    maps = torch.tensor([[[0.0, 2.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 5.0]]])
    big = upsample(maps, (8, 6))
    assert big.shape == (2, 8, 6)
    assert torch.allclose(big.flatten(1).amax(1), torch.ones(2))
    assert big[0, 0, -1] > big[0, -1, -1]  # the top-right corner was the high one


def test_show_gradcam_draws_photo_and_map():
    import matplotlib

    matplotlib.use("Agg")
    ax = show_gradcam(torch.rand(3, 8, 8).numpy(), torch.rand(8, 8).numpy(), title="hotdog 0.93")
    assert len(ax.images) == 2 and ax.get_title() == "hotdog 0.93"
