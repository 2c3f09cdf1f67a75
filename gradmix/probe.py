"""Linear probe: closed-set accuracy of frozen features (the "linear evaluation" / SSL downstream test).

Follows the GradMix authors' ``main_linear.py`` (gawainxu/GradMix; docs/methods.md): a linear layer
on the frozen encoder ("backbone") features, cross-entropy, Adam (their ``set_optimizer``; their
scripts: lr 0.01, 20-30 epochs, x0.1 steps at epochs 5, 10, 15), trained on the known-class training
set and tested on the known-class test set.

Choices where the sources differ or are silent:
* The features are computed once, from the un-augmented training images, with the encoder in eval
  mode (the authors run the frozen encoder on augmented batches every epoch; on a CPU the cached
  features make the probe cost milliseconds).
* The reported accuracy is the one after the last epoch. The authors print the *best* test accuracy
  over epochs, which selects on the test set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import ConfigError, check_choice, check_range
from .data import batches
from .knn import FEATURES


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int = 100                            # on cached features (authors: 20 epochs of 50k images)
    batch_size: int = 64                         # authors: 256
    lr: float = 0.01
    milestones: tuple[int, ...] = (60, 80)      # epochs after which lr is multiplied by ``gamma`` (authors: 5, 10, 15)
    gamma: float = 0.1
    weight_decay: float = 0.0                    # authors: parsed, not passed to Adam
    features: str = "backbone"                   # backbone (authors) | head

    def __post_init__(self):
        check_range("contrastive.probe.epochs", self.epochs, 1)
        check_range("contrastive.probe.batch_size", self.batch_size, 1)
        check_range("contrastive.probe.lr", self.lr, 0.0, low_open=True)
        check_range("contrastive.probe.gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("contrastive.probe.weight_decay", self.weight_decay, 0.0)
        check_choice("contrastive.probe.features", self.features, FEATURES)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(f"contrastive.probe.milestones: {list(self.milestones)} must be strictly increasing")


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, cfg: ProbeConfig, seed: int = 0) -> tuple[float, nn.Linear]:
    """Train a linear classifier on features train_x (M, D) -> labels (M,) in 0..K-1; return
    (accuracy on test_x (N, D) against test_y (N,), the trained layer). Deterministic given ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    opt = torch.optim.Adam(layer.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma)
    gen = torch.Generator(device=train_x.device).manual_seed(seed)
    for _ in range(cfg.epochs):
        for idx in batches(len(train_x), cfg.batch_size, gen):
            loss = F.cross_entropy(layer(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        acc = (layer(test_x).argmax(1) == test_y).float().mean().item()
    return acc, layer
