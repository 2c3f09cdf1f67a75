"""Per-epoch bookkeeping of a training run: device-side sums, the non-finite check, progress lines and
DVCLive curves.

* :class:`EpochStats` collects per-step values as *device* tensors (the loss of every step; the
  fraction of pixels a box mixer replaced, ``masked_fraction``; GradMix's degenerate-map fallback,
  ``fallback_fraction``) and reads them back once per epoch, so a training step never waits for the
  host. The per-step losses double as the divergence check: the first non-finite one is named by
  epoch and step, without a per-step synchronisation (the rest of that epoch is wasted, nothing is
  saved from it).
* :func:`epoch_line` is the one line per epoch a run prints (``train.progress``); a line per epoch
  reads the same in a terminal, a notebook, ``dvc repro`` output and a cluster log file.
* :class:`LiveLog` writes each epoch's metrics in DVCLive's on-disk layout:
  ``<dir>/plots/metrics/<name>.tsv`` (``step<TAB><name>``, one row per epoch, step = epoch) and
  ``<dir>/metrics.json`` (the latest values and ``step``), which ``dvc plots`` and DVC Studio read.
  It does not call ``dvclive.Live``: constructing a ``Live`` opens the DVC repository and Git on every
  run and, inside a Git repository without DVC, runs ``dvc init`` there (dvclive 3.49, even with
  ``save_dvc_exp=False, dvcyaml=None``), and may post to DVC Studio from inside training. The format
  is small and documented; tests/test_runs.py checks the files against ``dvclive.Live``'s. A failure to
  write them is reported once and never stops or slows the run.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch


class EpochStats:
    """Sums of per-step quantities on the training device, read once per epoch (:meth:`close`)."""

    def __init__(self):
        self._losses: list[torch.Tensor] = []
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def loss(self, value: torch.Tensor) -> None:
        """Record one step's scalar loss (kept on its device; no synchronisation)."""
        self._losses.append(value.detach().reshape(()))

    def add(self, name: str, values: torch.Tensor) -> None:
        """Add per-sample values (N,) to the epoch mean of ``name``."""
        s = values.detach().sum(dtype=torch.float64)
        self._sums[name] = self._sums[name] + s if name in self._sums else s
        self._counts[name] = self._counts.get(name, 0) + values.numel()

    def add_mean(self, name: str, value: torch.Tensor, count: int) -> None:
        """Add a per-step mean ``value`` (a device scalar) over ``count`` samples to the epoch mean of
        ``name`` (the epoch mean weights each step by its sample count)."""
        s = value.detach().reshape(()).to(torch.float64) * count
        self._sums[name] = self._sums[name] + s if name in self._sums else s
        self._counts[name] = self._counts.get(name, 0) + count

    def mixed(self, mixed) -> None:
        """Record a mixer's output: ``masked_fraction`` = mean over its samples of the fraction of
        pixels replaced (``Mixed.mask`` (N, 1, H, W); a batch the mixer left unmixed counts 0), and
        ``fallback_fraction`` where the mixer reports a per-sample ``fallback`` (N,) flag."""
        mask = getattr(mixed, "mask", None)
        if mask is not None:
            self.add("masked_fraction", mask.flatten(1).float().mean(1))
        fallback = getattr(mixed, "fallback", None)
        if fallback is not None:
            self.add("fallback_fraction", fallback.float())

    def recording(self, mixer):
        """``mixer`` (a gradmix.mixing function, or None) wrapped so each output is recorded."""
        if mixer is None:
            return None

        def mix(*args, **kwargs):
            out = mixer(*args, **kwargs)
            self.mixed(out)
            return out

        return mix

    def close(self) -> tuple[np.ndarray, dict[str, float]]:
        """(per-step losses as float64 (steps,), {name: epoch mean}) with one device-to-host copy; resets."""
        names = list(self._sums)
        parts = [torch.stack(self._losses).double()] if self._losses else []
        parts += [torch.stack([self._sums[k] for k in names])] if names else []
        flat = torch.cat([p.reshape(-1).cpu() for p in parts]).numpy() if parts else np.empty(0)
        losses, sums = flat[:len(self._losses)], flat[len(self._losses):]
        means = {k: float(v) / self._counts[k] for k, v in zip(names, sums)}
        self.__init__()
        return losses, means


def first_nonfinite(values: np.ndarray) -> tuple[int, float] | None:
    """(index, value) of the first NaN or infinite entry of ``values``, or None."""
    bad = np.flatnonzero(~np.isfinite(values))
    return (int(bad[0]), float(values.flat[bad[0]])) if len(bad) else None


SHORT = {"loss": "loss", "lr": "lr", "test_accuracy": "acc", "test_auroc_mls": "auroc",
         "knn_accuracy": "knn_acc", "test_auroc_knn": "auroc_knn", "probe_accuracy": "probe_acc",
         "masked_fraction": "masked", "fallback_fraction": "fallback"}


def epoch_line(label: str, row: dict, epochs: int) -> str:
    """``erm/split0-seed0 epoch 3/15  loss 0.5123  lr 0.04  acc 0.874  auroc 0.801  12.3s``."""
    parts = [f"{label} epoch {row['epoch']}/{epochs}"]
    parts += [f"{SHORT[k]} {row[k]:.4g}" for k in SHORT if k in row]
    return "  ".join(parts + [f"{row.get('seconds', 0.0):.1f}s"])


def say(message: str, stream=None) -> None:
    """Print a run's status line now (flushed: papermill, dvc and cluster logs show it at once)."""
    print(message, file=stream or sys.stdout, flush=True)


class LiveLog:
    """Per-epoch metrics of one run in DVCLive's layout under ``directory`` (module docstring).

    ``rows`` (the log so far, e.g. of a resumed run) are written first, so after a resume the files
    hold every epoch exactly once and the steps continue. Columns ``skip`` and non-numeric values
    are not logged; NaN is written ``nan``, as DVCLive does.
    """

    skip = ("epoch", "seconds")

    def __init__(self, directory: str | Path, rows=()):
        self.dir = Path(directory)
        self.summary: dict = {}
        self.ok = True
        self._guard(lambda: (shutil.rmtree(self.dir, ignore_errors=True), self.dir.mkdir(parents=True)))
        for row in rows:
            self.log(row)

    def _guard(self, fn) -> None:
        if not self.ok:
            return
        try:
            fn()
        except Exception as e:      # curves are a convenience: never let them stop a run
            self.ok = False
            say(f"warning: per-epoch curves in {self.dir} are no longer written ({type(e).__name__}: {e}); "
                f"training goes on", sys.stderr)

    def log(self, row: dict) -> None:
        """Append one epoch (``row["epoch"]`` is the step) to every metric's file; rewrite metrics.json."""
        self._guard(lambda: self._write(row))

    def _write(self, row: dict) -> None:
        step = int(row["epoch"])
        folder = self.dir / "plots" / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        for name, value in row.items():
            if name in self.skip or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            value = int(value) if isinstance(value, numbers.Integral) else float(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            path = folder / f"{name}.tsv"
            new = not path.exists()
            with open(path, "a", encoding="utf-8", newline="") as f:
                f.write((f"step\t{name}{os.linesep}" if new else "") + f"{step}\t{value}{os.linesep}")
            self.summary[name] = value
        self.summary["step"] = step
        tmp = self.dir / ".metrics.json.partial"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.summary, f, indent=4)
            f.write("\n")
        os.replace(tmp, self.dir / "metrics.json")
