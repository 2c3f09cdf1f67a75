"""Per-batch training steps of the cross-entropy track: what one batch does before the optimiser step.

A *step* is ``step(x, y, num_classes, generator, label_smoothing=0.0) -> loss`` for a batch x
(N, C, H, W), y (N,). It runs its forward pass(es) under the run's autocast
(:class:`gradmix.precision.Precision`), has accumulated the gradient of its loss into the parameters'
``.grad`` when it returns (its backward pass(es) are done: once for most methods, twice for the shared
attribution pass), and returns the loss detached, a device scalar the trainer records without
reading it. The trainer zeroes the gradients before a step and steps the optimiser after it, so a
method that needs more than one backward (or none) brings its own step and the loop stays the same.

* :func:`loss_step`: one loss, one backward; every method by default (the per-batch loss of
  :func:`gradmix.train.training_loss`, or a loss hook such as distillation's).
* :func:`shared_gradmix_step`: GradMix with ``use: extra`` and ``attribution_pass: shared``.

The shared attribution pass (``gradmix.attribution_pass: shared``)
-------------------------------------------------------------------
``separate`` (the default, and what :func:`gradmix.mixing.gradmix.gradmix` does by itself) runs a
forward of the clean batch only for the maps, with dropout off and BatchNorm statistics frozen, and
then the training forward of [clean; mixed] in one pass. ``shared`` reuses the training forward
instead:

1. forward the clean batch once, in train mode, with the attribution stages' outputs A hooked;
   clean loss L_c = mean_i CE(f(x_i), y_i);
2. the attribution gradient ∂S/∂A from that graph: for ``objective: gt_logit | pred_logit`` a
   partial backward of S = Σ_i score_i to the stages only (``torch.autograd.grad`` with
   ``retain_graph``; no parameter gradient); for ``objective: ce`` no extra backward at all: tensor
   hooks on A read ∂L_c/∂A during L_c's own backward, and Σ_i CE_i = N·L_c (the gradient of the
   smoothed loss if ``train.label_smoothing`` > 0, and unscaled by fp16's loss scale);
3. backward L_c (parameter gradients of the clean term);
4. maps (LayerCAM / Grad-CAM, float32), the GradMix box and the mixed view x̃, as in ``separate``;
5. forward and backward the mixed loss L_m = mean_i w_i·CE(f(x̃_i), t_i).

The parameters' ``.grad`` then hold ∇(L_c + L_m), the gradient of the same loss as ``separate``, and
the optimiser takes one step. What changes on purpose: the clean and the mixed images no longer share
BatchNorm batch statistics in one forward (each is normalised with its own batch's statistics, and
the running statistics are updated twice per step, clean then mixed), and the maps come from the
train-mode forward (dropout on, BatchNorm batch statistics including the momentum update of step 1)
instead of a pass with dropout off and frozen statistics; so ``bn`` must be ``batch``. The authors'
own contrastive code forwards its views separately, too. With BatchNorm in eval mode (and no
dropout) both modes give the same gradients to float tolerance (tests/test_speed.py). With ``centre:
random`` / ``random_clipped`` (no maps) ``shared`` means only the two separate forwards, which keeps
``gradmix_random`` a like-for-like ablation of a shared GradMix. With ``prob`` < 1 the maps are
computed for every batch, mixed or not. ``use: replace`` has no clean term to share and is refused
by the config.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .attribution import capture, class_objective, cam, combine
from .losses import soft_cross_entropy
from .precision import Precision

Step = Callable[..., torch.Tensor]


def loss_step(loss_fn: Callable[..., torch.Tensor], precision: Precision) -> Step:
    """The default step: ``loss_fn(x, y, num_classes, generator, label_smoothing)`` (a scalar) under
    autocast, one backward, the loss detached."""
    def step(x, y, num_classes, generator, label_smoothing=0.0):
        with precision.autocast(x):
            loss = loss_fn(x, y, num_classes, generator, label_smoothing)
        precision.backward(loss)
        return loss.detach()

    return step


def shared_gradmix_step(model, mixer, options, precision: Precision) -> Step:
    """GradMix with ``use: extra`` and the shared attribution pass (module docstring).

    ``mixer``: :func:`gradmix.mixing.gradmix.gradmix` with ``options`` bound (and the run's host
    generator and epoch recording, as the trainer builds it); it receives the maps, so it runs no
    attribution pass of its own.
    """
    o = options
    stages = tuple(o.stages) if o.centre == "peak" else ()

    def step(x, y, num_classes, generator, label_smoothing=0.0):
        n = len(x)
        onehot = F.one_hot(y.long(), num_classes).float()
        with precision.autocast(x), capture(model, stages) as acts:
            logits = model(x)
            clean = soft_cross_entropy(logits, onehot, label_smoothing).mean()
        maps = None
        if stages:
            if o.objective == "ce":              # read ∂L_c/∂A during L_c's own backward
                grads: dict[str, torch.Tensor] = {}
                hooks = [acts[s].register_hook(lambda g, s=s: grads.__setitem__(s, g)) for s in stages]
                precision.backward(clean)
                for h in hooks:
                    h.remove()
                factor = n / precision.loss_scale(clean)           # Σ_i CE_i = N·L_c; undo fp16 scaling
                grads = {s: g.float() * factor for s, g in grads.items()}
            else:                                # partial backward to the stages, graph kept for L_c
                score = class_objective(o.objective, y)(logits.float()).sum()
                got = torch.autograd.grad(score, [acts[s] for s in stages], retain_graph=True)
                grads = dict(zip(stages, got))
                precision.backward(clean)
            maps = combine({s: cam(acts[s].detach(), grads[s], o.attribution) for s in stages},
                           tuple(x.shape[-2:]), o.normalize)
        else:
            precision.backward(clean)
        mixed = mixer(x, y, num_classes=num_classes, generator=generator, model=model, maps=maps)
        with precision.autocast(x):
            extra = (mixed.weight * soft_cross_entropy(model(mixed.x), mixed.target, label_smoothing)).mean()
        precision.backward(extra)
        return clean.detach() + extra.detach()

    return step


def uses_shared_pass(method) -> bool:
    """Whether a ``methods`` entry (gradmix.config.MethodConfig) trains with :func:`shared_gradmix_step`."""
    return method.mixer == "gradmix" and getattr(method.options, "attribution_pass", "separate") == "shared"
