"""GradMix (Xu, Kao, Keuper, arXiv 2505.12803), cross-entropy form.

Follows the authors' code (gawainxu/GradMix ``datautil.py``: ``layer_salient_maps``,
``salient_cutmix``, ``rand_bbox``), with the choices the sources leave open made explicit:

1. Attribution (:mod:`gradmix.attribution`): LayerCAM or Grad-CAM of a per-sample score (the
   ground-truth logit | the predicted logit | the CE loss) on the chosen stages, computed in a
   separate pass with BatchNorm statistics frozen and no parameter gradients. Each stage map is
   min-max normalised (over the whole batch, as the authors, or per image), upsampled bilinearly and
   summed over stages.

   Which way the map points (``objective``): the paper's words, "mask out already learned concepts",
   fit ``gt_logit`` (LayerCAM of ∂z_y/∂A: where the evidence for the true class is, the default
   ``gradmix`` row). The authors' code takes the positive part of the gradient of the training
   *loss* (ReLU(∂L/∂A) with L = their NT-Xent, ``datautil.py`` ``layer_salient_maps``); its
   cross-entropy counterpart is ``ce`` (the ``gradmix_ce`` row). The two point roughly opposite ways,
   since ∂CE/∂z_k = p_k - 1[k = y]: the CE gradient is largest where the evidence *against* the
   true class is, and on digits only about one peak in eight of the two objectives lies within 2 px
   of the other. Neither is wrong; the pipeline reports both.
2. Box: λ = lam_low + lam_span·Beta(α, β) (authors: 0.5 + 0.4·Beta(1, 1), one per batch); side
   int(S·sqrt(1 - λ)); the box is [c - side//2, c + side//2) around a centre c chosen by ``centre``:

   * ``peak``: each image's attribution peak (first arg-max in row-major order), the box clipped to
     the image as in the authors' ``rand_bbox`` with an activation. An image whose map has no peak
     (all zero, constant, or any NaN/inf; :func:`~gradmix.attribution.degenerate`) falls back to the
     ``random`` rule below instead of pixel (0, 0); ``Mixed.fallback`` says which images did.
   * ``random``: the area-matched ablation that shows what attribution buys (no attribution pass).
     The centre is uniform in [side//2, S - side//2) per axis, the authors' ``rand_bbox`` without an
     activation, so the box always lies inside the image and masks the same nominal area as a peak
     box away from the border.
   * ``random_clipped``: the centre uniform over the whole image and the box clipped (CutMix's rule;
     the ablation of earlier versions of this package). Near the border the box is smaller, so it
     masks about a fifth less than ``peak`` on 16-px images.
3. Fill: uniform noise U[0, 1) broadcast over channels (the authors' current code) | the whole
   partner image resized into the box (their commented-out line) | the co-located partner patch.
4. Label: the original label with noise; with a partner fill, the soft label of the exact clipped
   box area. ``lam`` is 1 - the exact clipped box area (the authors use the unclipped area).
5. Weight: λ' = 1 - box area (``weight: unmasked``, the authors' extra-view weight) or 1.
   Whether the mixed batch is an extra view or replaces the clean one is the method's ``use``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..attribution import (BN_MODES, METHODS, NORMALIZE, OBJECTIVES, attribute, class_objective, combine,
                           degenerate, normalize_map, peak, stage_maps)
from ..checks import ConfigError, check_choice, check_range
from .boxes import (Mixed, box_bounds, box_mask, coin, cut_sizes, inside_centres, mask_area, mask_bounds,
                    mixer_inputs, pairing, resized_into_boxes, sample_beta, soft_targets, uniform_centres,
                    unmixed)

FILLS = ("noise", "partner", "colocated")
CENTRES = ("peak", "random", "random_clipped")
PASSES = ("separate", "shared")


@dataclass(frozen=True)
class GradMixOptions:
    attribution: str = "layercam"               # layercam | gradcam
    stages: tuple[str, ...] = ("stage2", "stage3")
    objective: str = "gt_logit"                 # gt_logit (paper's wording) | ce (authors' code's sign) | pred_logit
    normalize: str = "batch"                    # batch (authors) | image
    bn: str = "batch"                           # batch statistics, running stats untouched | eval
    centre: str = "peak"                        # peak | random (in-image, area-matched) | random_clipped
    fill: str = "noise"                         # noise | partner | colocated
    alpha: float = 1.0
    beta: float = 1.0
    lam_low: float = 0.5
    lam_span: float = 0.4
    per_sample: bool = False                    # one λ per image instead of per batch
    weight: str = "unmasked"                    # unmasked (λ') | one
    prob: float = 1.0                           # authors: every batch
    attribution_pass: str = "separate"          # separate (own forward, frozen BN) | shared (the clean training forward)

    def __post_init__(self):
        check_choice("gradmix.attribution", self.attribution, METHODS)
        check_choice("gradmix.objective", self.objective, OBJECTIVES)
        check_choice("gradmix.normalize", self.normalize, NORMALIZE)
        check_choice("gradmix.bn", self.bn, BN_MODES)
        check_choice("gradmix.centre", self.centre, CENTRES)
        check_choice("gradmix.fill", self.fill, FILLS)
        check_choice("gradmix.weight", self.weight, {"unmasked", "one"})
        check_range("gradmix.alpha", self.alpha, 0.0, low_open=True)
        check_range("gradmix.beta", self.beta, 0.0, low_open=True)
        check_range("gradmix.lam_low", self.lam_low, 0.0, 1.0)
        check_range("gradmix.lam_span", self.lam_span, 0.0, 1.0 - self.lam_low)
        check_range("gradmix.prob", self.prob, 0.0, 1.0)
        check_choice("gradmix.attribution_pass", self.attribution_pass, PASSES)
        if self.attribution_pass == "shared" and self.bn != "batch":
            raise ConfigError(f"gradmix.bn: {self.bn!r} needs attribution_pass: separate; the shared pass takes its "
                              f"maps from the training forward (train mode, batch statistics), so bn must be "
                              f"'batch' (valid with shared: batch)")
        if not self.stages:
            raise ConfigError("gradmix.stages: empty; name at least one model stage")


def gradmix(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
            options: GradMixOptions, model=None, maps: torch.Tensor | None = None,
            rng: np.random.Generator | None = None) -> Mixed:
    """Mask (or mix) a box around each image's attribution peak; x (N, C, H, W) floating point, y (N,)
    integer labels of any integer dtype. Returns images in x's dtype and device.

    ``maps`` (N, H, W) may be given to skip the attribution pass (e.g. for display, or the trainer's
    shared pass: :mod:`gradmix.steps`). Images whose map is degenerate get a random in-image centre
    (module docstring, ``Mixed.fallback``); those centres are drawn for every image and used where
    needed, so the step never asks the host whether any map was degenerate. ``rng``: the host
    generator of the per-batch coin and λ (gradmix.mixing.boxes); None: ``generator``.
    """
    o = options
    y = mixer_inputs(x, y, "gradmix")
    src = generator if rng is None else rng
    if not coin(o.prob, src):
        return unmixed(x, y, num_classes)
    n, c, h, w = x.shape
    lam0 = o.lam_low + o.lam_span * sample_beta(o.alpha, o.beta, n if o.per_sample else 1, src, x.device)
    cut_h, cut_w = cut_sizes(lam0.expand(n), h, w)
    fallback = None
    if o.centre == "peak":
        if maps is None:
            if model is None:
                raise ValueError("gradmix with centre 'peak' needs the model for its attribution pass")
            maps = attribute(model, x, class_objective(o.objective, y), o.stages, o.attribution,
                             o.normalize, o.bn)
        if maps.shape != (n, h, w):
            raise ValueError(f"gradmix: maps of shape {tuple(maps.shape)} for images {tuple(x.shape)}; "
                             f"expected ({n}, {h}, {w})")
        fallback = degenerate(maps).to(x.device)
        usable = torch.where(fallback[:, None, None].to(maps.device), torch.zeros((), dtype=maps.dtype,
                                                                                  device=maps.device), maps)
        cy, cx = peak(usable, check=False)            # finite by construction
        ry, rx = inside_centres(cut_h, cut_w, h, w, generator, x.device)
        cy, cx = torch.where(fallback, ry, cy.to(x.device)), torch.where(fallback, rx, cx.to(x.device))
    elif o.centre == "random":
        cy, cx = inside_centres(cut_h, cut_w, h, w, generator, x.device)
    else:
        cy, cx = uniform_centres(n, h, w, generator, x.device)
    bounds = box_bounds(cy, cx, cut_h, cut_w, h, w)
    mask = box_mask(bounds, h, w)
    lam = 1.0 - mask_area(mask)
    perm = pairing(n, generator, x.device)
    if o.fill == "noise":
        fill = torch.rand((n, 1, h, w), generator=generator, device=generator.device).to(x)
        fill = fill.expand(n, c, h, w)
        target = F.one_hot(y, num_classes).float()
    else:
        fill = x[perm] if o.fill == "colocated" else resized_into_boxes(x[perm], bounds, h, w)
        target = soft_targets(y, perm, lam, num_classes)
    weight = lam.clone() if o.weight == "unmasked" else torch.ones(n, device=x.device)
    return Mixed(torch.where(mask, fill, x), target, lam, weight, mask, fallback=fallback)


def explain(model, x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
            options: GradMixOptions) -> dict:
    """What GradMix does to a batch, for display: per-stage maps (normalised, (N, h, w)), the summed
    map (N, H, W), the :class:`Mixed` result and its box bounds (y1, y2, x1, x2)."""
    o = options
    maps = stage_maps(model, x, class_objective(o.objective, y), o.stages, o.attribution, o.bn)
    combined = combine(maps, tuple(x.shape[-2:]), o.normalize)
    mixed = gradmix(x, y, num_classes=num_classes, generator=generator, options=o, model=model,
                    maps=combined)
    return {"stage_maps": {s: normalize_map(m, o.normalize) for s, m in maps.items()},
            "combined": combined, "mixed": mixed, "bounds": mask_bounds(mixed.mask)}
