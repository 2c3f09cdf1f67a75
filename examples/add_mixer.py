"""Add a mixer: its options dataclass, its function with the ``Mixed`` contract, its registry entry and
a ``methods:`` entry, then train it one epoch with the package's own trainer.

    python examples/add_mixer.py [out_dir]

The mixer, *StripeMix*, is a small example of a two-image mix (not a published method): the bottom
``round((1 - λ)·H)`` rows of each image come from a partner image of the batch, λ ~ Beta(α, α) once
per batch, and the label is mixed by the rows each image keeps. See docs/extending.md.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from gradmix import config, evaluate, trainers
from gradmix.checks import check_range
from gradmix.mixing import MIXERS, Mixed, register_mixer
from gradmix.mixing.boxes import beta_value, coin, pairing, soft_targets, unmixed

ROOT = Path(__file__).resolve().parents[1]


# 1. The options: one field per params.yaml key, validated when the config is loaded.
@dataclass(frozen=True)
class StripeMixOptions:
    alpha: float = 1.0      # λ ~ Beta(α, α), one per batch
    prob: float = 1.0       # probability that a batch is mixed

    def __post_init__(self):
        check_range("stripemix.alpha", self.alpha, 0.0, low_open=True)
        check_range("stripemix.prob", self.prob, 0.0, 1.0)


# 2. The function: pure (the input is never modified), batched, on the input's device, random only
#    through ``generator`` (per-sample draws, on the device) and ``rng`` (per-batch scalars, on the
#    host, so that a training step never waits to read a device value; the trainer passes its own);
#    it returns a Mixed (x, target, lam, weight, mask, partner).
def stripemix(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, generator: torch.Generator,
              options: StripeMixOptions, model=None, rng=None) -> Mixed:
    """Mix a batch x (N, C, H, W) with labels y (N,): rows [H - r, H) from x[perm], r = round((1 - λ)·H)."""
    src = generator if rng is None else rng
    if not coin(options.prob, src):
        return unmixed(x, y, num_classes)
    n, h = len(x), x.shape[2]
    lam = beta_value(options.alpha, options.alpha, src)             # a Python float
    rows = round((1 - lam) * h)
    perm = pairing(n, generator, x.device)
    mask = torch.zeros((n, 1, *x.shape[2:]), dtype=torch.bool, device=x.device)
    mask[:, :, h - rows:] = True
    kept = torch.full((n,), 1 - rows / h, device=x.device)          # the exact share each image keeps
    return Mixed(x=torch.where(mask, x[perm], x), target=soft_targets(y, perm, kept, num_classes), lam=kept,
                 weight=torch.ones(n, device=x.device), mask=mask, partner=perm)


# 3. The registry entry: params.yaml may now say `mixer: stripemix`.
def register() -> None:
    if "stripemix" not in MIXERS:
        register_mixer("stripemix", StripeMixOptions, stripemix)


# 4. A `methods:` entry, as it would be written in params.yaml.
METHOD = """
stripemix:
  mixer: stripemix
  use: replace             # replace: train on the mixed batch | extra: clean batch + mixed batch
  alpha: 1.0
  prob: 1.0
"""


def main(out_dir: str | Path | None = None, epochs: int = 1) -> Path:
    """Register StripeMix, add its method to the repository's params (smoke settings, one split) and
    train it; returns the run directory."""
    register()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["methods"].update(yaml.safe_load(METHOD))
    cfg = config.apply_smoke(config.from_dict(raw))                 # validated like any params.yaml
    cfg = config.replace(cfg, train={"epochs": epochs})
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="gradmix-stripemix-"))
    (run,) = trainers.train_method(cfg, "stripemix", out_dir)
    print(run, evaluate.evaluate_run(run, cfg.evaluate.scores))
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
