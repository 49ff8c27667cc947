"""Models: building from torchvision backbones, logits, computed feature sizes, freezing, parameter groups,
probabilities, and the offline-weights error.

Structure tests use ``weights=None`` (no download); one test loads the real MobileNetV2 weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import MobileNet_V2_Weights

from tlcourse.data import TransformSettings
from tlcourse.models import (
    SUPPORTED_BACKBONES,
    TransferClassifier,
    WeightsUnavailableError,
    build_model,
    count_parameters,
    param_groups,
    predict_proba,
    weights_enum,
    weights_path,
)

BACKBONES = ["vgg11", "resnet18", "mobilenet_v2"]
#: Where torchvision's own models keep the block that turns features into ImageNet logits.
TORCHVISION_CLASSIFIER = {"vgg11": "classifier", "resnet18": "fc", "mobilenet_v2": "classifier"}
N_CLASSES = 3


@pytest.fixture(scope="module", params=BACKBONES)
def built(request) -> TransferClassifier:
    """One randomly initialised model per backbone, shared by the read-only tests."""
    torch.manual_seed(0)
    return build_model(N_CLASSES, request.param, weights=None)


def images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def torchvision_feature_size(backbone: str, crop: int = 224) -> int:
    """The length of the vector torchvision's own model feeds into its classifier, measured."""
    model = torchvision.models.get_model(backbone, weights=None).eval()
    seen = []
    block = getattr(model, TORCHVISION_CLASSIFIER[backbone])
    block.register_forward_pre_hook(lambda module, args: seen.append(args[0].flatten(1).shape[1]))
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, crop, crop))
    assert logits.shape == (1, 1000)  # torchvision's classifiers have 1000 ImageNet classes
    return seen[0]


def test_supported_backbones_are_the_course_ones():
    assert set(BACKBONES) <= set(SUPPORTED_BACKBONES)


def test_model_outputs_logits_of_shape_n_by_classes(built):
    built.eval()
    with torch.no_grad():
        logits = built(images(5))
    assert logits.shape == (5, N_CLASSES)
    assert torch.isfinite(logits).all()
    # Logits, not probabilities: rows do not sum to 1, and some are negative.
    assert not torch.allclose(logits.sum(1), torch.ones(5), atol=1e-3)
    assert (logits < 0).any()


def test_no_softmax_module_anywhere(built):
    kinds = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Sigmoid)
    assert not [m for m in built.modules() if isinstance(m, kinds)]
    assert isinstance(list(built.head.children())[-1], nn.Linear)
    assert built.head[-1].out_features == N_CLASSES


def test_feature_size_is_what_torchvision_model_computes(built):
    expected = torchvision_feature_size(built.backbone_name)
    assert built.n_features == expected
    assert built.head[-1].in_features == expected
    built.eval()
    with torch.no_grad():
        assert built.features(torch.zeros(2, 3, 224, 224)).shape == (2, expected)


#: The torchvision class each backbone name builds (the backbone is that model with its classifier removed).
TORCHVISION_CLASS = {"vgg11": torchvision.models.VGG, "resnet18": torchvision.models.ResNet,
                     "mobilenet_v2": torchvision.models.MobileNetV2}


def test_model_records_what_it_was_built_from(built, request):
    requested = request.node.callspec.params["built"]
    assert built.n_classes == N_CLASSES
    assert built.weights_name is None
    assert built.transform_settings == TransformSettings()
    assert built.backbone_name == requested
    assert type(built.backbone) is TORCHVISION_CLASS[requested]  # and it really is that network


def test_hidden_layer_head():
    model = build_model(2, "resnet18", weights=None, hidden=16, dropout=0.1)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(model.n_features, 16), (16, 2)]


@pytest.mark.parametrize("weights", [None, "DEFAULT"])
@pytest.mark.parametrize("name", ["vgg12", "fasterrcnn_resnet50_fpn"])  # a typo; a detection model
def test_unknown_backbone_is_a_clear_error(name, weights):
    with pytest.raises(ValueError, match=f"Unknown backbone '{name}'.*mobilenet_v2"):
        build_model(2, name, weights=weights)


def test_unknown_weights_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown weights 'IMAGENET'.*IMAGENET1K_V1.*None"):
        build_model(2, "resnet18", weights="IMAGENET")


def test_weights_enum_api():
    assert weights_enum("mobilenet_v2") is MobileNet_V2_Weights.DEFAULT
    assert weights_enum("mobilenet_v2", "IMAGENET1K_V1") is MobileNet_V2_Weights.IMAGENET1K_V1
    assert weights_enum("resnet18", None) is None


# --------------------------------------------------------------------------- freezing
def batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (BatchNorm running_mean/var/num_batches_tracked included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_steps(model: nn.Module, steps: int = 3, size: int = 64) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-2)
    model.train()
    for step in range(steps):
        x, y = images(4, size, seed=step), torch.tensor([0, 1, 2, 0])
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_freeze_really_freezes_the_backbone(backbone):
    torch.manual_seed(0)
    model = build_model(N_CLASSES, backbone, weights=None).freeze()
    assert model.frozen
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert count_parameters(model, trainable_only=True) == sum(p.numel() for p in model.head.parameters())
    backbone_before, head_before = snapshot(model.backbone), snapshot(model.head)

    model.train()  # the whole model in train mode ...
    assert model.training and model.head.training
    assert not model.backbone.training  # ... but the frozen backbone stays in eval
    assert all(not bn.training for bn in batchnorm_layers(model.backbone))

    train_steps(model, steps=3)

    after = snapshot(model.backbone)
    assert after.keys() == backbone_before.keys()
    for name, value in backbone_before.items():  # weights and BatchNorm statistics bit-identical
        assert torch.equal(after[name], value), name
    assert all(p.grad is None for p in model.backbone.parameters())  # no gradients were even computed
    head_after = snapshot(model.head)
    assert any(not torch.equal(head_after[k], v) for k, v in head_before.items())  # the head learned


def test_mobilenet_has_batchnorm_to_protect():
    # Makes sure the BatchNorm part of the freeze test above is not vacuous.
    model = build_model(2, "mobilenet_v2", weights=None)
    assert len(batchnorm_layers(model.backbone)) > 10
    assert batchnorm_layers(build_model(2, "resnet18", weights=None).backbone)


def test_unfrozen_batchnorm_does_update():
    # The reference behaviour freezing must prevent: train-mode BatchNorm changes its statistics.
    torch.manual_seed(0)
    model = build_model(N_CLASSES, "mobilenet_v2", weights=None)
    before = snapshot(model.backbone)
    train_steps(model, steps=1)
    after = snapshot(model.backbone)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.endswith("running_mean") for k in changed) and any(k.endswith("num_batches_tracked") for k in changed)
    assert any(k.endswith("weight") for k in changed)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_unfreeze_restores_learning(backbone):
    torch.manual_seed(0)
    model = build_model(N_CLASSES, backbone, weights=None)
    model.freeze().train()
    model.unfreeze()
    assert not model.frozen
    assert all(p.requires_grad for p in model.parameters())
    assert model.backbone.training  # follows the model's mode again
    assert all(bn.training for bn in batchnorm_layers(model.backbone))
    model.eval()
    assert not model.backbone.training
    model.train()
    assert model.backbone.training
    before = snapshot(model.backbone)
    train_steps(model, steps=1, size=32)
    after = snapshot(model.backbone)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_unfreeze_in_eval_mode_keeps_eval():
    model = build_model(2, "resnet18", weights=None).freeze()
    model.eval()
    model.unfreeze()
    assert not model.backbone.training and not model.training


def test_unfreeze_without_batchnorm_updates_keeps_statistics_but_learns():
    # Fine-tuning with small batches: weights (BatchNorm's scale and shift too) learn, the
    # pretrained running statistics stay; without the option they change (test above).
    torch.manual_seed(0)
    model = build_model(N_CLASSES, "mobilenet_v2", weights=None).freeze().unfreeze(update_batchnorm=False)
    model.train()
    assert model.backbone.training and all(not bn.training for bn in batchnorm_layers(model.backbone))
    before = snapshot(model.backbone)
    train_steps(model, steps=2, size=32)
    after = snapshot(model.backbone)
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    bn_weights = [k for k in before if k.endswith("weight") and k.replace("weight", "running_mean") in before]
    assert bn_weights and any(not torch.equal(before[k], after[k]) for k in bn_weights)
    model.unfreeze()  # back to ordinary train-mode BatchNorm
    assert all(bn.training for bn in batchnorm_layers(model.backbone))


# --------------------------------------------------------------------------- parameter groups
@pytest.mark.parametrize("backbone", BACKBONES)
def test_param_groups_cover_every_trainable_parameter_once(backbone):
    model = build_model(N_CLASSES, backbone, weights=None)
    groups = param_groups(model, head_lr=1e-3, backbone_lr=1e-5, weight_decay=0.01)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("head", 1e-3, 0.01),
                                                                        ("backbone", 1e-5, 0.01)]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter twice
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}  # none left out
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.head.parameters()}
    # torch accepts them (it refuses a parameter in two groups).
    optimizer = torch.optim.AdamW(groups)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-5]


def test_param_groups_leave_out_frozen_parameters():
    model = build_model(N_CLASSES, "mobilenet_v2", weights=None).freeze()
    groups = param_groups(model, head_lr=1e-2, backbone_lr=1e-4)
    assert [g["name"] for g in groups] == ["head"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters() if p.requires_grad}


def test_param_groups_rates_act_in_an_optimizer_step():
    model = build_model(N_CLASSES, "resnet18", weights=None)
    optimizer = torch.optim.SGD(param_groups(model, head_lr=1.0, backbone_lr=0.0))
    before = snapshot(model)
    train_steps_with(model, optimizer)
    after = snapshot(model)
    # backbone_lr=0: the backbone's weights do not move (its BatchNorm statistics still may).
    for name, param in model.backbone.named_parameters():
        assert torch.equal(after["backbone." + name], before["backbone." + name]), name
    assert not torch.equal(after["head.2.weight"], before["head.2.weight"])


def train_steps_with(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    loss = nn.functional.cross_entropy(model(images(4, 32)), torch.tensor([0, 1, 2, 0]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# --------------------------------------------------------------------------- probabilities
def test_predict_proba_is_softmax_of_the_logits_in_eval_mode():
    torch.manual_seed(0)
    model = build_model(N_CLASSES, "mobilenet_v2", weights=None, dropout=0.5)
    model.train()
    x = images(6)
    probs = predict_proba(model, x)
    assert model.training  # mode restored
    assert probs.shape == (6, N_CLASSES) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(1), torch.ones(6))
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)
    torch.testing.assert_close(probs, expected)
    assert torch.equal(predict_proba(model, x), predict_proba(model, x))  # dropout off: deterministic


# --------------------------------------------------------------------------- real and missing weights
def test_default_weights_are_the_real_pretrained_file(real_weights):
    model = build_model(2, "mobilenet_v2", weights="DEFAULT")
    enum = MobileNet_V2_Weights.DEFAULT
    assert weights_path(enum).resolve() == real_weights.resolve()
    assert model.weights_name == str(enum)
    assert model.transform_settings == TransformSettings.from_weights(enum)
    stored = torch.load(real_weights, map_location="cpu", weights_only=True)
    ours = model.backbone.state_dict()
    backbone_keys = [k for k in stored if not k.startswith("classifier.")]
    assert set(backbone_keys) == set(ours)
    for key in backbone_keys:
        assert torch.equal(ours[key], stored[key]), key


def assert_clear_weights_message(message: str, torch_home: Path) -> None:
    assert "mobilenet_v2-7ebf99e0.pth" in message  # which file
    assert str(torch_home) in message and "TORCH_HOME" in message  # where it was looked for
    assert "Fix:" in message and "hub/checkpoints" in message  # how to fix it


def test_missing_weights_offline_fail_at_once_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:  # the caller passes get_config().offline
        build_model(2, "mobilenet_v2", weights="DEFAULT", offline=True)
    assert_clear_weights_message(str(info.value), tmp_path)
    assert "TLCOURSE_OFFLINE" in str(info.value)
    assert not list(tmp_path.rglob("*.pth*"))


# Runs in a fresh interpreter, so a hang can be cut off by the subprocess timeout.
_BUILD_SCRIPT = textwrap.dedent("""
    import sys
    from tlcourse.models import WeightsUnavailableError, build_model, load_state_dict, weights_enum
    try:
        if len(sys.argv) > 1:
            load_state_dict(weights_enum("mobilenet_v2"), timeout=float(sys.argv[1]))
        else:
            build_model(2, "mobilenet_v2", weights="DEFAULT")
    except WeightsUnavailableError as error:
        print("ERROR:", error)
        sys.exit(3)
    print("LOADED")
""")
#: Generous: the test is about not hanging (for minutes), not about speed.
NO_HANG_TIMEOUT = 90


def run_build(torch_home: Path, extra_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TLCOURSE_OFFLINE"}
    env.update(TORCH_HOME=str(torch_home), **extra_env)
    try:
        return subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, *args], env=env, capture_output=True,
                              text=True, timeout=NO_HANG_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"build_model hung for more than {NO_HANG_TIMEOUT} s looking for missing weights")


def test_missing_weights_without_offline_flag_fail_without_hanging(tmp_path, require):
    # No TLCOURSE_OFFLINE: a real download attempt (this machine and CI have no internet).
    result = run_build(tmp_path, {})
    require(not (result.returncode == 0 and "LOADED" in result.stdout),
            "A machine without internet (here the download worked)")
    assert result.returncode == 3, result.stderr
    assert_clear_weights_message(result.stdout, tmp_path)
    assert "download.pytorch.org" in result.stdout  # says the download was tried and failed
    assert not list((tmp_path / "hub" / "checkpoints").glob("*.pth"))  # no half-written file left


@pytest.fixture
def silent_proxy():
    """A proxy that accepts connections and never answers: what a black-holed network looks like."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    connections = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=10)  # the loop checks `stop` every 0.2 s
    assert not thread.is_alive(), "the silent proxy's accept loop did not stop"
    for conn in connections:
        conn.close()
    server.close()


def test_a_stalled_download_times_out_with_the_fix(tmp_path, silent_proxy):
    proxy_env = {"https_proxy": silent_proxy, "HTTPS_PROXY": silent_proxy, "no_proxy": "", "NO_PROXY": ""}
    result = run_build(tmp_path, proxy_env, "2")
    assert result.returncode == 3, result.stdout + result.stderr
    assert_clear_weights_message(result.stdout, tmp_path)
    assert "timed out" in result.stdout.lower()
