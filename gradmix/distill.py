"""Asymmetric distillation (Jia, Kong, Tang, Gao, Dong, Yang; IJCAI 2024, arXiv 2404.19527; official
22222222z/Asymmetric-Distillation ``train_kd_eval_openset.py: train_kd``, ``my_loss_function.py``,
``augmentation_train.py``): the student's options and losses.

A *teacher* is trained with cross-entropy on the raw (unmixed) images of the known classes, one
per split and seed (:mod:`gradmix.teacher`, which also wires the student into the cross-entropy
trainer). A *student* (a method with ``kind: distill``) loads the teacher of its split and seed
from that checkpoint (the released code never loads it: its ``load_checkpoint`` line is commented
out), freezes it (eval mode, no gradients) and trains with, per batch x, y (z_S student logits,
z_T teacher logits on the raw batch):

* clean batch: α·CE(z_S(x), y) + DIST(z_S(x), z_T(x))   (official ``loss_DIST``; DIST = :func:`dist_loss`);
* mixed batch (the student's mixer, CutMix or Mixup, fires: official ``random() > 0.5``, here the
  mixer's own ``prob``), with partner j = perm(i) and λ the image's own share:
  - L = samples whose teacher prediction on the *mixed* image is one of its two source classes,
    U = the rest (official ``verify_teacher``; ties count as a prediction, as there);
  - DIST(z_S(x̃)[L], z_T(x)[L])                     (towards the teacher on the *raw* image i);
  - mean over U of CE(z_S(x̃), s/K + (1 - s)·(λ·y_i + (1 - λ)·y_j))   (selective relabel; the
    official code builds this smoothed target with ``smooth_ratio`` s but trains on the hard
    two-hot one: here s is ``smoothing`` and is used; ``smoothing: 0`` gives the released loss);
  - λ̄·DIST(z_S(x̃), z_T(x)) + (1 - λ̄)·DIST(z_S(x̃), z_T(x)[perm])   (the teacher's raw-image outputs
    of both sources; λ̄ = the batch mean of λ, which is the official scalar λ for the default one
    box / one λ per batch);
  - ``mixed: replace`` (official): these three terms replace the clean loss; ``add``: clean + mixed,
    with clean and mixed images in one student forward pass. In ``replace`` the student is not run
    on the clean batch (the official code runs it but discards the output, which only moves BN
    running statistics).

With the mixer off (``mixer: none`` or ``prob: 0``) every batch is clean: plain DIST distillation.
Open-set scoring is the maximum logit (MLS), the pipeline's ``evaluate.primary_score``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import torch
from torch import nn

from .checks import ConfigError, build, check_choice, check_range
from .losses import dist_loss, soft_cross_entropy

STUDENT_MIXERS = ("none", "cutmix", "mixup")   # mixers whose Mixed reports the partner (official: --cutmix | --mixup)


@dataclass(frozen=True)
class DistillOptions:
    """``methods.<name>.distill``: the student's losses (official values as defaults)."""

    alpha: float = 1.0              # weight of the clean CE term (official params.alpha)
    beta: float = 1.0               # DIST inter-class (per-sample) weight
    gamma: float = 1.0              # DIST intra-class (per-class) weight
    tau: float = 1.0                # DIST temperature (official: 1)
    relabel: bool = True            # selective relabel (false: every mixed sample in the DIST term)
    smoothing: float = 0.75         # s of the relabel target s/K + (1-s)·two-hot (official smooth_ratio)
    mixed: str = "replace"          # replace: a mixed batch's loss replaces the clean one (official) | add

    def __post_init__(self):
        check_range("distill.alpha", self.alpha, 0.0)
        check_range("distill.beta", self.beta, 0.0)
        check_range("distill.gamma", self.gamma, 0.0)
        check_range("distill.tau", self.tau, 0.0, low_open=True)
        check_range("distill.smoothing", self.smoothing, 0.0, 1.0)
        check_choice("distill.mixed", self.mixed, {"replace", "add"})


def distill_options(where: str, mixer: str, use: str, values: Mapping[str, Any] | None) -> DistillOptions:
    """Validate a ``kind: distill`` method's mixer and its ``distill`` mapping (called by config)."""
    check_choice(f"{where}.mixer (kind distill)", mixer, STUDENT_MIXERS)
    if use != "replace":
        raise ConfigError(f"{where}.use: not used by kind 'distill'; set {where}.distill.mixed "
                          f"(replace | add) instead")
    return build(DistillOptions, values, f"{where}.distill")


# --- losses -------------------------------------------------------------------------------------

def clean_loss(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, o: DistillOptions,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """α·CE(z_s, y) + DIST(z_s, z_t) on a clean batch; logits (N, K), labels (N,)."""
    onehot = torch.nn.functional.one_hot(y, z_s.shape[1]).float()
    ce = soft_cross_entropy(z_s, onehot, label_smoothing).mean()
    return o.alpha * ce + dist_loss(z_s, z_t, o.beta, o.gamma, o.tau)


def teacher_knows(z_t_mixed: torch.Tensor, y: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the teacher's top class on the mixed image is y_i or y_partner(i) (ties included)."""
    top = z_t_mixed.amax(1)
    return (z_t_mixed.gather(1, y[:, None])[:, 0] >= top) | (z_t_mixed.gather(1, y[partner][:, None])[:, 0] >= top)


def mixed_loss(z_s_mixed: torch.Tensor, z_t: torch.Tensor, z_t_mixed: torch.Tensor, y: torch.Tensor,
               partner: torch.Tensor, lam: torch.Tensor, target: torch.Tensor, o: DistillOptions) -> torch.Tensor:
    """The student's loss on a mixed batch (module docstring): logits (N, K); y, partner, lam (N,);
    target (N, K) the two-hot λ·y_i + (1 - λ)·y_partner(i)."""
    d = partial(dist_loss, beta=o.beta, gamma=o.gamma, tau=o.tau)
    if not o.relabel:
        loss = d(z_s_mixed, z_t)
    else:                          # masks, not boolean indexing: no host synchronisation (docs/speed.md)
        learn = teacher_knows(z_t_mixed, y, partner)
        relabel = (~learn).float()
        ce = soft_cross_entropy(z_s_mixed, target, o.smoothing)
        loss = d(z_s_mixed, z_t, select=learn) + (relabel * ce).sum() / relabel.sum().clamp_min(1)
    lam_bar = lam.mean()
    return loss + lam_bar * d(z_s_mixed, z_t) + (1 - lam_bar) * d(z_s_mixed, z_t[partner])


def distillation_loss(student: nn.Module, teacher: nn.Module, mixer, o: DistillOptions, x: torch.Tensor,
                      y: torch.Tensor, num_classes: int, generator: torch.Generator,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """One batch's student loss; same call shape as :func:`gradmix.train.training_loss` after its
    first three arguments. The teacher runs in eval mode without gradients. Labels y (N,) may have
    any integer dtype."""
    y = y.long()
    if teacher.training:
        raise RuntimeError("the teacher must stay in eval mode (use freeze())")
    with torch.no_grad():
        z_t = teacher(x)
    mixed = None if mixer is None else mixer(x, y, num_classes=num_classes, generator=generator, model=student)
    if mixed is None or mixed.partner is None:                       # clean batch
        return clean_loss(student(x), z_t, y, o, label_smoothing)
    with torch.no_grad():
        z_t_mixed = teacher(mixed.x)
    if o.mixed == "add":
        z = student(torch.cat([x, mixed.x]))
        clean, z_s_mixed = clean_loss(z[: len(x)], z_t, y, o, label_smoothing), z[len(x):]
    else:
        clean, z_s_mixed = 0.0, student(mixed.x)
    return clean + mixed_loss(z_s_mixed, z_t, z_t_mixed, y, mixed.partner, mixed.lam, mixed.target, o)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` on every parameter; returns the model."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
