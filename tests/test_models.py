"""Tests for comdml_ray.learning.models: split points, prefix+suffix == whole model, keys, layer counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from comdml_ray.learning.models import MODELS, Bottleneck, SplitModel, build_model

torch.set_num_threads(1)

INPUTS = [(1, 28), (3, 32)]  # (channels, pixels): Fashion-MNIST and CIFAR shapes


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, int, int], SplitModel]:
    """Each model built once per input shape (ResNet-110 is the costly one)."""
    torch.manual_seed(0)
    out = {}
    for name in MODELS:
        for c, px in INPUTS:
            out[(name, c, px)] = build_model(name, c, px, num_classes=10).eval()
    return out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels,pixels", INPUTS)
def test_prefix_then_suffix_equals_model(models, name: str, channels: int, pixels: int) -> None:
    model = models[(name, channels, pixels)]
    x = torch.randn(2, channels, pixels, pixels)
    with torch.no_grad():
        # Per-block outputs once, then check every split against them: cheap for ResNet-110.
        full = model(x)
        assert full.shape == (2, 10)
        for m in model.split_points():
            z = model.prefix(m)(x)
            assert tuple(z.shape[1:]) == model.cut_shape(m)
            torch.testing.assert_close(model.suffix(m)(z), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_split_points_and_sharing(models, name: str) -> None:
    model = models[(name, 3, 32)]
    assert model.split_points() == list(range(1, len(model.blocks)))
    assert model.num_splits >= 3
    m = model.split_points()[0]
    # Prefix/suffix share the model's modules (training them trains the model).
    assert model.prefix(m)[0] is model.blocks[0]
    assert model.suffix(m)[-1] is model.blocks[-1]
    for bad in (0, model.num_splits + 1):
        with pytest.raises(ValueError):
            model.prefix(bad)


@pytest.mark.parametrize("name", MODELS)
def test_aux_head_is_new_and_shapes_fit(models, name: str) -> None:
    model = models[(name, 1, 28)]
    n_params = sum(p.numel() for p in model.parameters())
    for m in model.split_points():
        head = model.make_aux_head(m)
        c, h, w = model.cut_shape(m)
        assert head(torch.randn(3, c, h, w)).shape == (3, model.num_classes)
        assert not any(p is q for p in head.parameters() for q in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_params


@pytest.mark.parametrize("name", MODELS)
def test_prefix_and_suffix_keys_partition_state_dict(models, name: str) -> None:
    model = models[(name, 3, 32)]
    keys = list(model.state_dict())
    assert any(k.endswith("running_mean") for k in keys)  # buffers are included
    for m in model.split_points():
        pre, suf = model.prefix_keys(m), model.suffix_keys(m)
        assert set(pre).isdisjoint(suf)
        assert sorted(pre + suf) == sorted(keys)
        assert all(int(k.split(".")[1]) < m for k in pre)
        # The prefix module's own state_dict is exactly these tensors, renumbered.
        assert len(model.prefix(m).state_dict()) == len(pre)


def test_cut_shape_dry_run_leaves_train_mode_and_bn_stats_alone() -> None:
    model = build_model("cnn", 1, 28, 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.cut_shape(1) == (16, 14, 14)
    assert model.cut_shape(3, (1, 32, 32)) == (64, 8, 8)
    assert all(mod.training for mod in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _main_path_layers(model: nn.Module) -> int:
    """Conv + linear layers, excluding projection shortcuts (the classic ResNet depth count)."""
    return sum(1 for name, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear)) and "shortcut" not in name)


@pytest.mark.parametrize("name,depth,per_stage", [("resnet56", 56, 3), ("resnet110", 110, 6)])
def test_resnet_depth_and_stages(models, name: str, depth: int, per_stage: int) -> None:
    model = models[(name, 3, 32)]
    assert _main_path_layers(model) == depth
    assert len(model.blocks) == 8  # stem, six stages, head
    stages = list(model.blocks)[1:-1]
    assert all(len(s) == per_stage and all(isinstance(b, Bottleneck) for b in s) for s in stages)
    assert [s[0].conv2.stride[0] for s in stages] == [1, 1, 2, 1, 2, 1]
    assert [s[0].conv1.out_channels for s in stages] == [16, 16, 32, 32, 64, 64]
    assert model.blocks[-1][-1].in_features == 64 * 4
    assert [model.cut_shape(m) for m in model.split_points()] == [
        (16, 32, 32),
        (64, 32, 32),
        (64, 32, 32),
        (128, 16, 16),
        (128, 16, 16),
        (256, 8, 8),
        (256, 8, 8),
    ]


def _expected_resnet_params(in_channels: int, per_stage: int, classes: int) -> int:
    """Parameter count of the bottleneck CIFAR ResNet, from its definition (independent of the code)."""
    total = in_channels * 16 * 9 + 2 * 16  # stem conv + BN
    in_planes = 16
    for planes, stride in ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
        for b in range(per_stage):
            out = 4 * planes
            total += in_planes * planes + 2 * planes + planes * planes * 9 + 2 * planes + planes * out + 2 * out
            if (b == 0 and stride != 1) or in_planes != out:
                total += in_planes * out + 2 * out  # projection shortcut
            in_planes = out
    return total + 256 * classes + classes


@pytest.mark.parametrize("name,per_stage", [("resnet56", 3), ("resnet110", 6)])
def test_resnet_parameter_count(models, name: str, per_stage: int) -> None:
    model = models[(name, 3, 32)]
    assert sum(p.numel() for p in model.parameters()) == _expected_resnet_params(3, per_stage, 10)


def test_unknown_model_is_one_sentence_value_error() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'vgg': choose one of cnn, resnet56, resnet110"):
        build_model("vgg", 3, 32, 10)
