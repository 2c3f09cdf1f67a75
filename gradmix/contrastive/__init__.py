"""The contrastive track: SupCon + SimCLR with an extra positive view (GradMix as its authors train it).

Follows gawainxu/GradMix ``main_supcon_old.py``. For a batch
of B images with two augmented views v1, v2 and Z = normalize(head(encoder([v1; v2]))) (2B, d):

    L = γ·L_SupCon(Z, y) + μ·L_SimCLR(Z)

Both terms are :func:`supcon_loss` (Khosla et al. 2020, "L_out"; without labels it is SimCLR's
NT-Xent). With an extra view x̃ of v1 (GradMix, Mixup, CutMix or a third augmentation), the
positives' features become Za = [f(x̃); f(v2)] in the numerator while the denominator keeps the clean
Z (the authors' ``features_positive``; a view-2 anchor's positive is then x̃), and

    L_SimCLR <- L_SimCLR(Z) + mean_i w_i·ℓ_i(Z, positives=Za)     (L_SupCon too if ``supcon_extra``)

with w = λ', the fraction of the image the view leaves unmixed (``weight: lam``; the authors' single
``lam``), or 1. GradMix's box comes from LayerCAM maps of the contrastive loss (``objective``:
the unsupervised NT-Xent over both views, as the authors), computed by
:func:`gradmix.attribution.attribute` in a separate pass with BatchNorm statistics frozen and
gradients taken w.r.t. stage activations only, so nothing leaks into the parameter update (the
authors' ``main_supcon.py`` leaks). Maps of both views are normalised over the
whole 2B batch; view 1's maps place the box (:func:`gradmix.mixing.gradmix.gradmix`, same box and
fill options as the cross-entropy track).

Choices where the sources are silent or impractical on a CPU, all selectable in params.yaml:
* One forward of [v1; v2; x̃] (3B images) per step, as the cross-entropy track's ``extra``; the
  authors forward [v1; v2] and [x̃; v2] separately (v2 twice, BatchNorm statistics per pass).
* Views (:func:`view`): gradmix.data's random crop plus an on-device random rotation/zoom and
  brightness/contrast jitter of the normalised pixels; a ±1-pixel crop alone makes instance
  discrimination on 16x16 digits trivial. Authors: ColorJitter + RandomResizedCrop on CIFAR,
  RandomRotation(±5°) on MNIST.
* Adam with cosine decay per step from lr to lr·lr_decay_rate³ (authors: per epoch).
* Evaluation (:func:`gradmix.contrastive.runs.evaluate_net`): class-wise kNN (:mod:`gradmix.knn`)
  and a linear probe (:mod:`gradmix.probe`) on the encoder features of the un-augmented images.

Modules: :mod:`~gradmix.contrastive.config` (the ``contrastive`` section of params.yaml),
:mod:`~gradmix.contrastive.losses`, :mod:`~gradmix.contrastive.views` (views, extra positive, maps)
and :mod:`~gradmix.contrastive.runs` (training runs, kNN and probe evaluation, ``load_net``). The
package namespace holds the first three only: :mod:`gradmix.config` imports the track's config, so
this ``__init__`` must not import ``runs`` (which builds on :mod:`gradmix.train`, which imports
:mod:`gradmix.config`). Train a contrastive method by name with :mod:`gradmix.trainers`.
"""
from .config import (OBJECTIVES, VIEWS, ContrastiveConfig, ContrastiveMethod, ContrastiveTrainConfig,
                     ViewConfig)
from .losses import ntxent, supcon_loss
from .views import (ContrastiveNet, attribution_objective, contrastive_maps, explain, explain_method, extra_mixed,
                    extra_view, loss_from_views, view)

__all__ = ["OBJECTIVES", "VIEWS", "ContrastiveConfig", "ContrastiveMethod", "ContrastiveTrainConfig",
           "ViewConfig", "ContrastiveNet", "supcon_loss", "ntxent", "view", "attribution_objective",
           "contrastive_maps", "extra_view", "extra_mixed", "loss_from_views", "explain", "explain_method"]
