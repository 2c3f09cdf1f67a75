"""SupCon and SimCLR's NT-Xent, with the GradMix authors' extra positives."""
from __future__ import annotations

import torch

from ..losses import full_precision


def supcon_loss(z: torch.Tensor, labels: torch.Tensor | None = None, *, views: int = 2,
                positives: torch.Tensor | None = None, temperature: float = 0.05,
                base_temperature: float = 0.07, reduction: str = "mean") -> torch.Tensor:
    """SupCon (Khosla et al. 2020, L_out; SupContrast ``SupConLoss``, contrast_mode "all").

    z: (V·B, d) L2-normalised features, view-major ([view 1 of all B images; view 2; ...]).
    labels: (B,), or None for SimCLR's NT-Xent (each image is its own class).
    positives: (V·B, d) features used in the numerator instead of z (the authors' ``features_positive``).
    For anchor i with positives P(i) = {p ≠ i : same label} and q = positives or z:

        ℓ_i = -(τ/τ_base) · 1/|P(i)| · Σ_{p∈P(i)} [ z_i·q_p/τ - log Σ_{a≠i} exp(z_i·z_a/τ) ]

    An anchor without a positive (a class with one image in the batch and ``views=1``, or SimCLR with
    one view) has no ℓ_i: it is left out of the mean (SupContrast divides 0 by 0 there, NaN), and a
    batch where no anchor has a positive gives 0 with a zero (not NaN) gradient.

    Returns the mean over the anchors that have a positive, or ℓ (V·B,) with ``reduction="none"``
    (ℓ_i = 0 where anchor i has no positive).
    """
    with full_precision(z):        # float32 whatever train.precision (logits z·z/τ reach 1/τ = 20)
        return _supcon(z.float(), labels, views, None if positives is None else positives.float(), temperature,
                       base_temperature, reduction)


def _supcon(z, labels, views, positives, temperature, base_temperature, reduction):
    n = len(z)
    if n % views:
        raise ValueError(f"supcon_loss: {n} features are not {views} views of equal batches")
    b = n // views
    ids = labels if labels is not None else torch.arange(b, device=z.device)
    if len(ids) != b:
        raise ValueError(f"supcon_loss: {len(ids)} labels for {b} images")
    ids = ids.repeat(views)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    pos = (ids[:, None] == ids[None, :]) & ~eye
    logits = z @ z.T / temperature
    log_denom = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
    num = logits if positives is None else z @ positives.T / temperature
    log_prob = torch.where(pos, num - log_denom, torch.zeros((), device=z.device))
    n_pos = pos.sum(1)
    loss = -(temperature / base_temperature) * log_prob.sum(1) / n_pos.clamp_min(1)   # 0 where no positive
    if reduction != "mean":
        return loss
    has = n_pos > 0               # the mean over anchors with a positive, without asking the host how many
    return torch.where(has, loss, torch.zeros((), device=z.device)).sum() / has.sum().clamp_min(1)


def ntxent(z: torch.Tensor, **kw) -> torch.Tensor:
    """SimCLR's NT-Xent: :func:`supcon_loss` without labels (the other views of an image are its positives)."""
    return supcon_loss(z, None, **kw)
