"""Bring your own model: wrap a torchvision backbone as a ``Classifier``, look at its LayerCAM maps,
register it and train GradMix with it through the package's own trainer.

    python examples/own_model.py [out_dir]

What attribution (and so GradMix, Saliency Grafting, R-Mix, the figures) needs from a model is
what :class:`gradmix.models.Classifier` provides: named *stages* (``model.stages``,
``model.stage(name)``: the modules whose outputs (N, C, h, w) are hooked), ``features(x)`` (N, D)
after global average pooling, and a linear head ``fc`` on them, so that
``logits = fc(mean_hw(last stage))``. Wrapping a backbone means cutting it into such stages.
See docs/extending.md.
"""
from __future__ import annotations

import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
import yaml
from torch import nn

from gradmix import config, data, evaluate, trainers
from gradmix.attribution import attribute, class_objective
from gradmix.models import MODELS, Classifier, register_model

ROOT = Path(__file__).resolve().parents[1]


class TorchvisionResNet18(Classifier):
    """torchvision's ImageNet ResNet-18 (7x7 stride-2 stem and max-pool, 1/32 resolution at ``layer4``)
    cut into the stages stem, layer1, layer2, layer3, layer4, then average pooling and ``fc``.

    ``weights`` is passed to ``torchvision.models.resnet18`` (e.g. ``"IMAGENET1K_V1"``, which
    torchvision downloads); for other than 3 input channels the stem convolution is replaced.
    """

    def __init__(self, in_channels: int, num_classes: int, weights=None):
        net = torchvision.models.resnet18(weights=weights)
        conv = net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        super().__init__(OrderedDict(stem=nn.Sequential(conv, net.bn1, net.relu, net.maxpool),
                                     layer1=net.layer1, layer2=net.layer2, layer3=net.layer3,
                                     layer4=net.layer4), net.fc.in_features, num_classes)


def register() -> None:
    """params.yaml may now say `model: {name: tv_resnet18}` (also teacher.name, contrastive.train.encoder)."""
    if "tv_resnet18" not in MODELS:
        register_model("tv_resnet18", TorchvisionResNet18)


# The params changes this example trains with, as they would be written in params.yaml.
OVERRIDES = """
data: {image_size: 32}     # 32 px in, 1/16 at layer3, 1/32 (1 x 1) at layer4
model: {name: tv_resnet18}
methods:
  gradmix: {stages: [layer2, layer3]}   # stages with a spatial map at this size
"""


def layercam_maps(model: Classifier, x: torch.Tensor, y: torch.Tensor, stages=("layer2", "layer3")) -> torch.Tensor:
    """LayerCAM maps (N, H, W) of the ground-truth logit over ``stages``, at the input's resolution."""
    return attribute(model, x, class_objective("gt_logit", y), list(stages), method="layercam")


def main(out_dir: str | Path | None = None, epochs: int = 1) -> Path:
    """Register the wrapped backbone, print the shape of its LayerCAM maps on a few images, and train
    GradMix with it (smoke settings, one split); returns the run directory."""
    register()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = config.merge(raw, yaml.safe_load(OVERRIDES))
    cfg = config.replace(config.apply_smoke(config.from_dict(raw)), train={"epochs": epochs})
    split = data.load_openset(cfg.data, cfg.data.splits[0])
    torch.manual_seed(0)
    model = TorchvisionResNet18(split.x_train.shape[1], split.num_classes)
    maps = layercam_maps(model, split.x_train[:8], split.y_train[:8])
    print(f"stages {model.stages}; LayerCAM maps {tuple(maps.shape)} in [{maps.min():.2f}, {maps.max():.2f}]")
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="gradmix-own-model-"))
    (run,) = trainers.train_method(cfg, "gradmix", out_dir)
    print(run, evaluate.evaluate_run(run, cfg.evaluate.scores))
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
