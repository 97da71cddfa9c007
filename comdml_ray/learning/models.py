"""Split-able models: block sequences with split points, prefixes/suffixes and auxiliary heads.

Owns the model zoo of the project (docs/method.md §2.1): every model is a `SplitModel`, a
plain sequence of blocks `[stem, stage1, ..., stageK, head]`. A split point m (1..M, with
M = len(blocks) - 1) cuts after block m: the offloading agent trains `prefix(m)` plus a fresh
`make_aux_head(m)` (local loss), the helper trains `suffix(m)`. The head is never split
off alone from the front, so m = M leaves the helper just the head.

Models:
- "cnn": a small 3-stage CNN, the fast CPU default for Fashion-MNIST.
- "resnet56" / "resnet110": CIFAR ResNets with bottleneck blocks (expansion 4), six stages
  of planes 16,16,32,32,64,64, stride 2 at the first block of stages 3 and 5, 3 resp. 6 blocks
  per stage (as the DTFL/ComDML reference code splits FedML's ResNet-56/110 [6,6,6]/[12,12,12]).
ResNets start with the last BN of every residual block at zero scale (`_init_weights`).
All take 1 or 3 input channels and 28 or 32 pixel images. No Ray imports here.
"""

from __future__ import annotations

import torch
from torch import nn

MODELS = ("cnn", "resnet56", "resnet110")


class SplitModel(nn.Module):
    """A sequence of blocks that can be cut after any block but the last.

    `state_dict` keys are "blocks.<k>.<...>", so prefix(m) owns exactly the keys with k < m.
    """

    def __init__(self, blocks: list[nn.Module], num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        if len(blocks) < 2:
            raise ValueError("a SplitModel needs at least two blocks (a body and a head)")
        self.blocks = nn.ModuleList(blocks)
        self.num_classes = num_classes
        self.input_shape = tuple(input_shape)  # (C, H, W) the model was built for
        # (C, H, W) per input shape -> list of the output shape after each block; filled lazily.
        self._cut_shapes: dict[tuple[int, int, int], list[tuple[int, ...]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_classes)
        for block in self.blocks:
            x = block(x)
        return x

    @property
    def num_splits(self) -> int:
        return len(self.blocks) - 1

    def split_points(self) -> list[int]:
        return list(range(1, self.num_splits + 1))

    def _check_split(self, m: int) -> None:
        if not isinstance(m, int) or not 1 <= m <= self.num_splits:
            raise ValueError(f"split point {m!r} is out of range: choose one of 1..{self.num_splits}")

    def prefix(self, m: int) -> nn.Sequential:
        """Blocks [0, m): shares the modules with this model, so training it trains the model."""
        self._check_split(m)
        return nn.Sequential(*self.blocks[:m])

    def suffix(self, m: int) -> nn.Sequential:
        """Blocks [m, end): shares the modules with this model."""
        self._check_split(m)
        return nn.Sequential(*self.blocks[m:])

    def _block_output_shapes(self, input_shape: tuple[int, int, int]) -> list[tuple[int, ...]]:
        if input_shape not in self._cut_shapes:
            # Dry run in eval mode so BatchNorm running stats stay untouched; restore each
            # module's own mode afterwards (they need not all agree).
            modes = [(mod, mod.training) for mod in self.modules()]
            self.eval()
            try:
                p = next(self.parameters())
                x = torch.zeros((1, *input_shape), device=p.device, dtype=p.dtype)
                shapes = []
                with torch.no_grad():
                    for block in self.blocks:
                        x = block(x)
                        shapes.append(tuple(x.shape[1:]))
            finally:
                for mod, mode in modes:
                    mod.training = mode
            self._cut_shapes[input_shape] = shapes
        return self._cut_shapes[input_shape]

    def cut_shape(self, m: int, input_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
        """Shape (C_m, H_m, W_m) of the smashed data z = prefix(m)(x) for one sample."""
        self._check_split(m)
        shape = self._block_output_shapes(tuple(input_shape or self.input_shape))[m - 1]
        return shape  # type: ignore[return-value]  # always 3-D: the head is never before a cut

    def make_aux_head(self, m: int) -> nn.Module:
        """A NEW auxiliary head for split m: (B, C_m, H_m, W_m) -> (B, num_classes)."""
        channels = self.cut_shape(m)[0]
        p = next(self.parameters())
        head = _classifier(channels, self.num_classes)
        return head.to(device=p.device, dtype=p.dtype)

    def _keys(self, lo: int, hi: int) -> list[str]:
        # keep_vars so no tensors are detached/copied just to list names; includes buffers.
        return [k for k in self.state_dict(keep_vars=True) if lo <= int(k.split(".", 2)[1]) < hi]

    def prefix_keys(self, m: int) -> list[str]:
        """state_dict keys (parameters and buffers) owned by prefix(m)."""
        self._check_split(m)
        return self._keys(0, m)

    def suffix_keys(self, m: int) -> list[str]:
        """state_dict keys (parameters and buffers) owned by suffix(m)."""
        self._check_split(m)
        return self._keys(m, len(self.blocks))


def _classifier(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pool + linear: the model head and every auxiliary head."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 bottleneck, planes p -> 4p channels, BN after each conv."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        # Projection only when the shape changes; not counted in the classic "56 layers".
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


# Six stages: (planes, stride of the first block). Stride 2 at stages 3 and 5 halves the
# resolution twice: 32 -> 16 -> 8 (28 -> 14 -> 7).
_RESNET_STAGES = ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1))


def _resnet_blocks(in_channels: int, num_classes: int, blocks_per_stage: int) -> list[nn.Module]:
    blocks: list[nn.Module] = [_conv_bn_relu(in_channels, 16)]  # stem: (B, 16, H, W)
    in_planes = 16
    for planes, stride in _RESNET_STAGES:
        stage = []
        for b in range(blocks_per_stage):
            stage.append(Bottleneck(in_planes, planes, stride if b == 0 else 1))
            in_planes = planes * Bottleneck.expansion
        blocks.append(nn.Sequential(*stage))
    blocks.append(_classifier(in_planes, num_classes))  # Linear(64*4, classes)
    return blocks


def _cnn_blocks(in_channels: int, num_classes: int) -> list[nn.Module]:
    # Downsample early: at 28x28 a full-resolution first conv dominated the CPU time
    # (~2x slower per batch) for little accuracy; the stride-2 stem keeps a batch of 32
    # near 7 ms forward+backward on one thread.
    return [
        _conv_bn_relu(in_channels, 16, stride=2),  # (B, 16, 14, 14) for 28 px
        _conv_bn_relu(16, 32, stride=2),  # (B, 32, 7, 7)
        _conv_bn_relu(32, 64),  # (B, 64, 7, 7)
        _classifier(64, num_classes),
    ]


def _init_weights(model: nn.Module, zero_init_residual: bool = True) -> None:
    """Kaiming init for convs (as torchvision/FedML ResNets), BN to identity.

    zero_init_residual: the last BN of every bottleneck starts at zero scale, so each
    residual block starts as the identity (Goyal et al. 2017; torchvision's option). Without
    it the 18/36 blocks' outputs add up and the first SGD steps diverge (benchmarks/README.md, "ResNet defaults").
    """
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, nn.BatchNorm2d):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)
    if zero_init_residual:
        for mod in model.modules():
            if isinstance(mod, Bottleneck):
                nn.init.zeros_(mod.bn3.weight)


def build_model(name: str, in_channels: int, image_size: int, num_classes: int, zero_init_residual: bool = True) -> SplitModel:
    """Build one of MODELS for images (in_channels, image_size, image_size) (zero_init_residual: see `_init_weights`)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if in_channels <= 0 or image_size < 8 or num_classes < 2:
        raise ValueError(
            f"model input must have >= 1 channel, >= 8 pixels and >= 2 classes, got "
            f"{in_channels} channels, {image_size} pixels, {num_classes} classes"
        )
    if name == "cnn":
        blocks = _cnn_blocks(in_channels, num_classes)
    else:
        blocks = _resnet_blocks(in_channels, num_classes, {"resnet56": 3, "resnet110": 6}[name])
    model = SplitModel(blocks, num_classes, (in_channels, image_size, image_size))
    _init_weights(model, zero_init_residual)
    return model
