"""Models by name: shapes, the CIFAR stem of ResNet-18, the two heads."""

import pytest
import torch

from objectives.errors import ConfigError
from objectives.models import build_model, count_flops


@pytest.mark.parametrize(("name", "channels", "size"), [("small-cnn", 1, 28), ("resnet18", 3, 32)])
def test_output_shape(name, channels, size):
    net = build_model(name, channels, 10, size).eval()
    assert net(torch.randn(2, channels, size, size)).shape == (2, 10)


def test_resnet18_has_the_cifar_stem():
    net = build_model("resnet18", 3, 10, 32)
    conv1 = net.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(net.backbone.maxpool, torch.nn.Identity)
    assert 11e6 < sum(p.numel() for p in net.parameters()) < 11.3e6  # ResNet-18's size


def test_two_heads_share_the_backbone():
    net = build_model("small-cnn-2head", 1, 10, 28).eval()
    x = torch.randn(3, 1, 28, 28)
    assert net.heads == 2
    assert not torch.allclose(net(x), net(x, head=2))
    net.head2.weight.data.zero_()
    net.head2.bias.data.zero_()
    assert torch.equal(net(x, head=2), torch.zeros(3, 10))
    with pytest.raises(ValueError):
        build_model("small-cnn", 1, 10, 28)(x, head=2)


def test_unknown_model_lists_known():
    with pytest.raises(ConfigError, match="resnet18-2head"):
        build_model("vgg11", 3, 10, 32)


def test_flop_count_of_a_linear_layer():
    lin = torch.nn.Linear(7, 5)
    assert count_flops(lin, torch.randn(3, 7)) == 2 * 3 * 7 * 5
