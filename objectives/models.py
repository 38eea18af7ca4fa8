"""The participants' architectures, built by name: a backbone plus one or two linear heads.

``small-cnn`` trains in seconds per epoch on a CPU (the embedded default); ``resnet18`` is
torchvision's ResNet-18 with the CIFAR stem (3×3 conv, stride 1, no max-pool) for the paper-scale
setup. The ``-2head`` variants add a second head on the shared backbone for the decentralized
setup of the Molo et al. poster: head 1 learns local cross-entropy, head 2 learns by KD.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import ConfigError

SMALL_CNN_WIDTH = 16
SMALL_CNN_HIDDEN = 128


def small_cnn_backbone(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """Two conv-BN-ReLU-pool blocks and a hidden layer; returns the module and its feature size."""
    w = SMALL_CNN_WIDTH
    side = image_size // 4
    body = nn.Sequential(
        nn.Conv2d(channels, w, 3, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * side * side, SMALL_CNN_HIDDEN),
        nn.ReLU(inplace=True),
    )
    return body, SMALL_CNN_HIDDEN


def resnet18_backbone(channels: int, image_size: int) -> tuple[nn.Module, int]:
    """torchvision's resnet18 with a CIFAR stem; its classifier is replaced by our head(s)."""
    del image_size  # global average pooling makes ResNet size-agnostic
    import torchvision  # ~2 s of import (torch._dynamo): only for the models that use it

    net = torchvision.models.resnet18(weights=None)
    # CIFAR-size inputs: a 7×7 stride-2 stem and max-pool would shrink 32×32 to 8×8 at once.
    net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    features = net.fc.in_features
    net.fc = nn.Identity()
    return net, features


_BACKBONES = {"small-cnn": small_cnn_backbone, "resnet18": resnet18_backbone}


class Net(nn.Module):
    """Backbone + head 1 (+ head 2). ``forward(x)`` uses head 1, ``forward(x, head=2)`` head 2."""

    def __init__(self, backbone: nn.Module, features: int, classes: int, heads: int = 1):
        super().__init__()
        self.backbone = backbone
        self.head1 = nn.Linear(features, classes)
        self.head2 = nn.Linear(features, classes) if heads == 2 else None

    @property
    def heads(self) -> int:
        return 1 if self.head2 is None else 2

    def forward(self, x: Tensor, head: int = 1) -> Tensor:
        feats = self.backbone(x)
        if head == 2:
            if self.head2 is None:
                raise ValueError("this model has one head")
            return self.head2(feats)
        return self.head1(feats)


def build_model(name: str, channels: int, classes: int, image_size: int) -> Net:
    """Build a fresh model by config name (``small-cnn``, ``resnet18``, ``*-2head``).

    The model is channels_last: on the CPU (oneDNN) that makes a small-CNN training step about
    1.3x and evaluation 2-3x faster, max-pooling most of all; on GPUs it is what tensor cores want.
    """
    base, _, suffix = name.partition("-2head")
    if base not in _BACKBONES or suffix:
        known = ", ".join(f"{b}{h}" for b in _BACKBONES for h in ("", "-2head"))
        raise ConfigError(f"unknown model {name!r}: choose one of {known}")
    backbone, features = _BACKBONES[base](channels, image_size)
    net = Net(backbone, features, classes, heads=2 if name.endswith("-2head") else 1)
    return net.to(memory_format=torch.channels_last)


def count_flops(model: nn.Module, sample: Tensor) -> int:
    """Multiply-adds × 2 of one forward pass on ``sample`` (conv and linear layers only)."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output: Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * output.numel() * k

    def linear_hook(module: nn.Linear, inputs, output: Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(sample)
    for h in handles:
        h.remove()
    return total
