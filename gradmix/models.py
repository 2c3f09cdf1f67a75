"""Classifiers with named stages, a global-average-pool and a linear head.

Every model is a :class:`Classifier`: ``body`` is an ``nn.Sequential`` of named stages (the names
attribution hooks use), followed by global average pooling and the linear head ``fc``. So
``logits = fc(mean_hw(body(x)))``, which is what makes CAM's closed form hold on the last stage.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision
from torch import nn

from .checks import ConfigError


class Classifier(nn.Module):
    """body (named stages) -> global average pool -> linear head.

    Input (N, C, H, W); :meth:`features` gives (N, D); ``forward`` gives logits (N, K).
    """

    def __init__(self, stages: "OrderedDict[str, nn.Module]", feat_dim: int, num_classes: int,
                 bias: bool = True):
        super().__init__()
        self.body = nn.Sequential(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feat_dim, num_classes, bias=bias)
        self.feat_dim = feat_dim

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.body.named_children())

    def stage(self, name: str) -> nn.Module:
        if name not in self.stages:
            raise ConfigError(f"unknown stage {name!r} for {type(self).__name__}; valid stages: {list(self.stages)}")
        return getattr(self.body, name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _conv_bn(cin: int, cout: int, stride: int = 1, act: nn.Module | None = None) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            act if act is not None else nn.ReLU(inplace=True)]


class SmallCNN(Classifier):
    """A 5-conv CNN for CPU-speed runs: stage1 at full resolution, stage2 at 1/2, stage3 at 1/4."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        w = width
        super().__init__(OrderedDict(
            stage1=nn.Sequential(*_conv_bn(in_channels, w)),
            stage2=nn.Sequential(*_conv_bn(w, 2 * w, 2), *_conv_bn(2 * w, 2 * w)),
            stage3=nn.Sequential(*_conv_bn(2 * w, 4 * w, 2), *_conv_bn(4 * w, 4 * w)),
        ), 4 * w, num_classes)


class ResNet18(Classifier):
    """CIFAR-style ResNet-18: torchvision's BasicBlock stages, 3x3 stride-1 stem, no max-pool.

    Stage names follow torchvision: stem, layer1..layer4 (the GradMix authors' 1-indexed "3,4" means
    layer3, layer4).
    """

    def __init__(self, in_channels: int, num_classes: int):
        net = torchvision.models.resnet18(num_classes=num_classes)
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), net.bn1, net.relu)
        nn.init.kaiming_normal_(stem[0].weight, mode="fan_out", nonlinearity="relu")
        super().__init__(OrderedDict(stem=stem, layer1=net.layer1, layer2=net.layer2,
                                     layer3=net.layer3, layer4=net.layer4), 512, num_classes)
        self.fc = net.fc


class VGG32(Classifier):
    """The "classifier32" of the OSR literature (Neal et al. 2018; Vaze et al. 2022, models/classifier32.py).

    Nine 3x3 convs (64-64-128 | 128-128-128 | 128-128-128, the last of each block stride 2), BatchNorm,
    LeakyReLU(0.2), Dropout2d(0.2) at the start of each block, bias-free linear head on 128-d features.
    """

    def __init__(self, in_channels: int, num_classes: int):
        def block(cin: int, cmid: int, cout: int) -> nn.Sequential:
            act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
            return nn.Sequential(nn.Dropout2d(0.2), *_conv_bn(cin, cmid, 1, act()),
                                 *_conv_bn(cmid, cmid, 1, act()), *_conv_bn(cmid, cout, 2, act()))

        super().__init__(OrderedDict(
            block1=block(in_channels, 64, 128),
            block2=block(128, 128, 128),
            block3=block(128, 128, 128),
        ), 128, num_classes, bias=False)
        for m in self.modules():  # Vaze et al.'s weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.05)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


MODELS = {"small_cnn": SmallCNN, "resnet18": ResNet18, "vgg32": VGG32}


def register_model(name: str, build, *, replace: bool = False) -> None:
    """Add model ``name`` to :data:`MODELS`, so that params.yaml's ``model.name`` (and
    ``teacher.name``, ``contrastive.train.encoder``) can select it.

    ``build(in_channels, num_classes)`` returns a :class:`Classifier` (docs/extending.md: what
    attribution needs from it). Raises ValueError if ``name`` is taken (unless ``replace``) and
    TypeError if ``build`` is not callable.
    """
    if name in MODELS and not replace:
        raise ValueError(f"model {name!r} is already registered; pass replace=True to override it")
    if not callable(build):
        raise TypeError(f"model {name!r}: build must be callable, got {build!r}")
    MODELS[name] = build


def build_model(cfg: "ModelConfig", in_channels: int, num_classes: int) -> Classifier:
    """Build ``cfg.name`` (a :class:`gradmix.config.ModelConfig`: ``name``, ``width``) for ``in_channels``-channel
    images and ``num_classes`` known classes."""
    if cfg.name == "small_cnn":
        return SmallCNN(in_channels, num_classes, cfg.width)
    return MODELS[cfg.name](in_channels, num_classes)
