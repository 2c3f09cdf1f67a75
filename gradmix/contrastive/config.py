"""Configuration of the contrastive track: the ``contrastive`` section of params.yaml.

Training knobs (:class:`ContrastiveTrainConfig`), the random views (:class:`ViewConfig`), kNN and
linear-probe settings (:class:`~gradmix.knn.KnnConfig`, :class:`~gradmix.probe.ProbeConfig`), the
methods (:class:`ContrastiveMethod`: loss weights γ, μ and the extra positive view) and the pipeline
roster. Bad values fail here, naming the valid choices, like :mod:`gradmix.config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..checks import ConfigError, build, check_choice, check_range, check_unique, coerce
from ..knn import KnnConfig
from ..mixing import MIXERS
from ..models import MODELS
from ..probe import ProbeConfig

VIEWS = ("none", "aug", "mixup", "cutmix", "gradmix")
OBJECTIVES = ("simclr", "supcon", "loss")       # what the GradMix attribution pass differentiates


@dataclass(frozen=True)
class ContrastiveTrainConfig:
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3                # Adam (authors: 1e-3)
    weight_decay: float = 0.0       # authors: parsed, not passed to Adam
    schedule: str = "cosine"        # cosine (to lr·lr_decay_rate³, authors) | constant
    lr_decay_rate: float = 0.8
    temperature: float = 0.05       # τ (authors: 0.05)
    base_temperature: float = 0.07  # loss × τ/τ_base (SupContrast's SupConLoss default)
    feat_dim: int = 128             # projection output
    head: str = "mlp"               # mlp: D -> D -> ReLU -> feat_dim (SupConResNet) | linear
    encoder: str = ""               # "" = the `model` section's network | small_cnn | resnet18 | vgg32

    def __post_init__(self):
        w = "contrastive.train"
        if self.encoder:
            check_choice(f"{w}.encoder", self.encoder, MODELS)
        check_range(f"{w}.epochs", self.epochs, 1)
        check_range(f"{w}.batch_size", self.batch_size, 2)
        check_range(f"{w}.lr", self.lr, 0.0, low_open=True)
        check_range(f"{w}.weight_decay", self.weight_decay, 0.0)
        check_choice(f"{w}.schedule", self.schedule, {"cosine", "constant"})
        check_range(f"{w}.lr_decay_rate", self.lr_decay_rate, 0.0, 1.0)
        check_range(f"{w}.temperature", self.temperature, 0.0, low_open=True)
        check_range(f"{w}.base_temperature", self.base_temperature, 0.0, low_open=True)
        check_range(f"{w}.feat_dim", self.feat_dim, 1)
        check_choice(f"{w}.head", self.head, {"mlp", "linear"})


@dataclass(frozen=True)
class ViewConfig:
    """The random view of an image: colour jitter and grayscale (gradmix.colour, on [0, 1] pixels),
    then crop, rotation/zoom, brightness/contrast (normalised pixels); 0 = off."""

    crop_padding: int = 2           # gradmix.data.augment random crop (pads with the mean colour)
    hflip: bool = False
    rotation: float = 10.0          # degrees, uniform in [-rotation, rotation]
    scale: float = 0.1              # zoom factor uniform in [1 - scale, 1 + scale]
    brightness: float = 0.4         # + uniform in [-b, b] (normalised pixels)
    contrast: float = 0.4           # × uniform in [1 - c, 1 + c]
    jitter_prob: float = 0.0        # RandomApply(ColorJitter(...), p) per image (authors: 0.8); 0 = off
    jitter_brightness: float = 0.4  # ColorJitter(brightness, contrast, saturation, hue): authors (0.4, 0.4, 0.4, 0.1)
    jitter_contrast: float = 0.4
    jitter_saturation: float = 0.4
    jitter_hue: float = 0.1
    grayscale_prob: float = 0.0     # RandomGrayscale(p) per image (authors: 0.2); 0 = off

    def __post_init__(self):
        w = "contrastive.views"
        check_range(f"{w}.crop_padding", self.crop_padding, 0)
        check_range(f"{w}.rotation", self.rotation, 0.0, 180.0)
        check_range(f"{w}.scale", self.scale, 0.0, 0.9)
        check_range(f"{w}.brightness", self.brightness, 0.0)
        check_range(f"{w}.contrast", self.contrast, 0.0, 1.0)
        check_range(f"{w}.jitter_prob", self.jitter_prob, 0.0, 1.0)
        for key in ("jitter_brightness", "jitter_contrast", "jitter_saturation"):
            check_range(f"{w}.{key}", getattr(self, key), 0.0)
        check_range(f"{w}.jitter_hue", self.jitter_hue, 0.0, 0.5)
        check_range(f"{w}.grayscale_prob", self.grayscale_prob, 0.0, 1.0)

    @property
    def colour(self) -> bool:
        """Whether the view changes colours on [0, 1] pixels (needs the data's mean and std)."""
        return self.jitter_prob > 0 or self.grayscale_prob > 0


_METHOD_KEYS = {"none": ("gamma", "mu", "view"),
                "aug": ("gamma", "mu", "view", "weight", "supcon_extra"),
                "mixup": ("gamma", "mu", "view", "weight", "supcon_extra", "options"),
                "cutmix": ("gamma", "mu", "view", "weight", "supcon_extra", "options"),
                "gradmix": ("gamma", "mu", "view", "weight", "supcon_extra", "objective", "options")}


@dataclass(frozen=True)
class ContrastiveMethod:
    """One contrastive method: loss weights, the extra view and its options."""

    name: str
    gamma: float = 1.0              # SupCon weight γ (0 = self-supervised)
    mu: float = 1.0                 # SimCLR weight μ
    view: str = "none"              # none | aug | mixup | cutmix | gradmix
    weight: str = "lam"             # extra-view weight: lam (λ', unmixed fraction, authors) | one
    supcon_extra: bool = False      # also add the extra positive to L_SupCon (authors' --supcon_aug)
    objective: str = "simclr"       # GradMix attribution loss: simclr (authors) | supcon | loss (γ·SupCon+μ·SimCLR)
    options: Any = None             # the mixer's options dataclass (mixup | cutmix | gradmix)

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "ContrastiveMethod":
        where = f"contrastive.methods.{name}"
        if not isinstance(values, Mapping) or "view" not in values:
            raise ConfigError(f"{where}: needs a 'view' key; valid views: {list(VIEWS)}")
        values = dict(values)
        check_choice(f"{where}.view", values["view"], VIEWS)
        keys = _METHOD_KEYS[values["view"]]
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} for view {values['view']!r}; valid keys: {list(keys)}")
        options = None
        if values["view"] in ("mixup", "cutmix", "gradmix"):
            raw = dict(values.pop("options", None) or {})
            if values["view"] == "gradmix":
                clash = sorted({"objective", "weight"} & set(raw))
                if clash:
                    raise ConfigError(f"{where}.options: {clash} belong to the cross-entropy track; here set "
                                      f"the method's own 'objective' {list(OBJECTIVES)} and 'weight' [lam, one]")
            options = build(MIXERS[values["view"]].options, raw, f"{where}.options")
        kw = {k: v for k, v in values.items() if k != "options"}
        hints = {"gamma": float, "mu": float, "view": str, "weight": str, "supcon_extra": bool, "objective": str}
        kw = {k: coerce(f"{where}.{k}", v, hints[k]) for k, v in kw.items()}
        m = cls(name=name, options=options, **kw)
        check_range(f"{where}.gamma", m.gamma, 0.0)
        check_range(f"{where}.mu", m.mu, 0.0)
        check_choice(f"{where}.weight", m.weight, {"lam", "one"})
        check_choice(f"{where}.objective", m.objective, OBJECTIVES)
        if m.gamma == 0 and m.mu == 0:
            raise ConfigError(f"{where}: gamma and mu are both 0; nothing to train")
        if m.view != "none" and m.mu == 0 and not m.supcon_extra:
            raise ConfigError(f"{where}: the extra view enters L_SimCLR, whose weight mu is 0; set mu > 0 "
                              f"or supcon_extra: true")
        if m.view == "gradmix" and m.objective == "supcon" and m.gamma == 0:
            raise ConfigError(f"{where}.objective: 'supcon' uses labels, but gamma = 0 (self-supervised); use simclr")
        return m

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in _METHOD_KEYS[self.view] if k != "options"}
        if self.options is not None:
            opts = dataclasses.asdict(self.options)
            if self.view == "gradmix":          # the cross-entropy track's knobs, unused here
                opts = {k: v for k, v in opts.items() if k not in ("objective", "weight")}
            out["options"] = opts
        return out


@dataclass(frozen=True)
class ContrastiveConfig:
    train: ContrastiveTrainConfig = field(default_factory=ContrastiveTrainConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    methods: dict = field(default_factory=dict)       # name -> ContrastiveMethod
    pipeline: tuple[str, ...] = ()                    # the methods `dvc repro` trains, in table order

    SECTIONS = ("train", "views", "knn", "probe", "methods", "pipeline")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ContrastiveConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"contrastive: expected a mapping, got {raw!r}")
        unknown = sorted(set(raw) - set(cls.SECTIONS))
        if unknown:
            raise ConfigError(f"contrastive: unknown key(s) {unknown}; valid keys: {list(cls.SECTIONS)}")
        methods_raw = raw.get("methods") or {}
        if not isinstance(methods_raw, Mapping):
            raise ConfigError("contrastive.methods: expected a mapping name -> method options")
        methods = {n: ContrastiveMethod.from_dict(n, v) for n, v in methods_raw.items()}
        pipeline = raw.get("pipeline", list(methods))
        if not isinstance(pipeline, (list, tuple)):
            raise ConfigError(f"contrastive.pipeline: expected a list of method names, got {pipeline!r}")
        for m in pipeline:
            check_choice("contrastive.pipeline", m, methods)
        check_unique("contrastive.pipeline", pipeline)
        return cls(train=build(ContrastiveTrainConfig, raw.get("train"), "contrastive.train"),
                   views=build(ViewConfig, raw.get("views"), "contrastive.views"),
                   knn=build(KnnConfig, raw.get("knn"), "contrastive.knn"),
                   probe=build(ProbeConfig, raw.get("probe"), "contrastive.probe"),
                   methods=methods, pipeline=tuple(pipeline))

    def to_dict(self) -> dict:
        return {"train": dataclasses.asdict(self.train), "views": dataclasses.asdict(self.views),
                "knn": dataclasses.asdict(self.knn), "probe": dataclasses.asdict(self.probe),
                "methods": {k: m.to_dict() for k, m in self.methods.items()}, "pipeline": list(self.pipeline)}

    def method(self, name: str) -> ContrastiveMethod:
        if name not in self.methods:
            raise ConfigError(f"unknown contrastive method {name!r}; valid methods: {sorted(self.methods)}")
        return self.methods[name]

    def merged(self, overrides: Mapping[str, Any] | None, where: str = "override") -> "ContrastiveConfig":
        """A copy with ``overrides`` (e.g. ``{"train": {"epochs": 1}}``) merged in, re-validated."""
        def merge(a, b):
            if isinstance(a, dict) and isinstance(b, Mapping):
                return {**a, **{k: merge(a.get(k), v) for k, v in b.items()}}
            return b
        try:
            return ContrastiveConfig.from_dict(merge(self.to_dict(), overrides or {}))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
