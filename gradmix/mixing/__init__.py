"""Mixing methods behind one API.

Every mixer is ``mix(x, y, *, num_classes, generator, options, model=None[, rng]) -> Mixed`` (see
:class:`~gradmix.mixing.boxes.Mixed`): pure, batched, device-agnostic, never in place. Images are
floating point and come back in their dtype and on their device; labels may have any integer dtype.
Only the attribution-guided methods use ``model``. :func:`masked_fraction` gives each image's
replaced fraction (box methods, grafting, R-Mix; None for Mixup) and ``Mixed.fallback`` the GradMix
images whose attribution map was degenerate, for per-epoch logs. :data:`MIXERS` maps a ``params.yaml``
mixer name to its options dataclass and function; :func:`register_mixer` adds one (docs/extending.md).
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from functools import partial
from typing import Callable

from .boxes import Mixed, masked_fraction
from .cutmix import CutMixOptions, cutmix
from .gradmix import GradMixOptions, gradmix
from .grafting import GraftingOptions, grafting
from .mixup import MixupOptions, mixup
from .rmix import RMixOptions, rmix


@dataclass(frozen=True)
class NoOptions:
    """ERM: no mixing, no options."""


@dataclass(frozen=True)
class MixerSpec:
    options: type
    fn: Callable | None
    needs_model: bool = False


MIXERS: dict[str, MixerSpec] = {
    "none": MixerSpec(NoOptions, None),
    "mixup": MixerSpec(MixupOptions, mixup),
    "cutmix": MixerSpec(CutMixOptions, cutmix),
    "gradmix": MixerSpec(GradMixOptions, gradmix, needs_model=True),
    "rmix": MixerSpec(RMixOptions, rmix, needs_model=True),
    "grafting": MixerSpec(GraftingOptions, grafting, needs_model=True),
}


def register_mixer(name: str, options: type, fn: Callable, *, needs_model: bool = False,
                   replace: bool = False) -> MixerSpec:
    """Add mixer ``name`` to :data:`MIXERS`, so that a ``methods`` entry of params.yaml can use it.

    ``options`` is a (frozen) dataclass whose fields are the method's keys in params.yaml, validated in
    its ``__post_init__``; ``fn(x, y, *, num_classes, generator, options, model=None) -> Mixed`` follows
    the contract of :class:`~gradmix.mixing.boxes.Mixed`. ``needs_model``: ``fn`` uses the model being
    trained (attribution-guided mixers). Raises ValueError if ``name`` is taken (unless ``replace``)
    and TypeError if ``options`` is not a dataclass or ``fn`` is not callable.
    """
    if name in MIXERS and not replace:
        raise ValueError(f"mixer {name!r} is already registered; pass replace=True to override it")
    if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
        raise TypeError(f"mixer {name!r}: options must be a dataclass, got {options!r}")
    if not callable(fn):
        raise TypeError(f"mixer {name!r}: fn must be callable, got {fn!r}")
    MIXERS[name] = spec = MixerSpec(options, fn, needs_model)
    return spec


def make_mixer(mixer: str, options, rng=None) -> Callable | None:
    """The mixer function with its options bound, or None for ``none``.

    ``rng``: a host ``numpy.random.Generator`` for the per-batch scalars (gradmix.mixing.boxes), bound
    too when the mixer takes an ``rng`` argument (every built-in one does; a registered mixer without
    it draws everything from the torch generator).
    """
    spec = MIXERS[mixer]
    if spec.fn is None:
        return None
    if rng is not None and "rng" in inspect.signature(spec.fn).parameters:
        return partial(spec.fn, options=options, rng=rng)
    return partial(spec.fn, options=options)


__all__ = ["MIXERS", "MixerSpec", "Mixed", "masked_fraction", "make_mixer", "register_mixer", "mixup", "cutmix",
           "gradmix", "rmix", "grafting",
           "MixupOptions", "CutMixOptions", "GradMixOptions", "RMixOptions", "GraftingOptions", "NoOptions"]
