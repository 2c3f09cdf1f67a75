"""Typed, validated configuration loaded from ``params.yaml``.

Every knob of the pipeline is a field below; ``params.yaml`` writes each one out. Bad values fail
here, before any data is loaded or any model is built, with a :class:`ConfigError` that names the
bad value and the valid choices.

Imports point one way: this module depends on the registries it validates against (datasets,
models, mixers, scores, OOD sets, corruptions, distillation options, the contrastive track's
config), on the leaf :mod:`gradmix.checks` and on :mod:`gradmix.profiles` (profiles, explicit values
and overrides on plain mappings); none of them imports this module.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import profiles
from .checks import ConfigError, build, check_choice, check_range, check_unique
from .contrastive.config import ContrastiveConfig
from .corruption import CIFAR10C_CORRUPTIONS, CORRUPTIONS
from .data import DATASETS, STORAGE
from .distill import distill_options
from .inheritance import read_params
from .mixing import MIXERS
from .models import MODELS
from .ood import OOD_SETS
from .profiles import (ProfileConfig, apply_overrides, check_complete, check_templated, merge, parse_overrides,
                       profile_names, resolve, yaml_values)
from .randaugment import MAX_M as RANDAUGMENT_MAX_M, POLICIES as RANDAUGMENT_POLICIES
from .precision import PRECISIONS
from .scores import SCORES
from .splits import OSR_SPLITS

__all__ = ["ConfigError", "build", "check_choice", "check_range", "Config", "DataConfig", "ModelConfig",
           "TrainConfig", "SlurmConfig", "MethodConfig", "EvalConfig", "BenchConfig", "OODConfig", "CorruptionConfig",
           "ProfileConfig", "TeacherConfig", "SECTIONS", "from_dict", "load", "merge", "profile_names",
           "apply_profile", "apply_smoke", "replace", "builtin_defaults", "parse_overrides", "apply_overrides",
           "yaml_values", "check_complete", "check_templated", "check_name", "pin_threads"]


@dataclass(frozen=True)
class DataConfig:
    """Dataset, open-set protocol and batch-level augmentation."""

    dataset: str = "digits"
    root: str = "data"
    image_size: int = 16            # 0 = the dataset's native size (ImageFolder: median shorter side)
    test_fraction: float = 0.3      # stratified hold-out for datasets without an official test set
    split_seed: int = 0             # seed of that stratified split and of the test-set balancing
    splits: tuple[int, ...] = (0, 1, 2, 3, 4)
    balance_test: bool = True       # subsample the larger of known/unknown test sets, without replacement (Vaze et al.: with)
    crop_padding: int = 1           # random-crop augmentation: pad by this many pixels (the mean colour), crop back
    hflip: bool = False             # random horizontal flip (off for digits)
    max_train: int = 0              # cap on training images, stratified (every known class kept), 0 = all
    known: str = "protocol"         # protocol | all | list | random: how known classes are chosen
    known_classes: tuple[Any, ...] = ()   # known=list: class names (ImageFolder: folder names; built-in datasets also integer ids)
    num_known: int = 0              # known=random: how many known classes per split
    known_seed: int = 0             # known=random: split k draws with seed (known_seed, k)
    folder: str = ""                # dataset=imagefolder: root of train/<class>/*, test/<class>/*
    mean: tuple[float, ...] = field(default=(), metadata={"repeats": True})   # per-channel normalisation mean; () = computed from the training images
    std: tuple[float, ...] = field(default=(), metadata={"repeats": True})    # per-channel normalisation std; () = computed
    mirror: str = ""                # base URL that replaces the official hosts: <mirror>/<file name>
    storage: str = "auto"           # pixels on the device: auto (uint8 if exact, else float16) | uint8 | float16 | float32

    def __post_init__(self):
        check_choice("data.dataset", self.dataset, DATASETS)
        if self.image_size != 0:
            check_range("data.image_size", self.image_size, 4)
        check_range("data.test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        check_range("data.crop_padding", self.crop_padding, 0)
        check_range("data.max_train", self.max_train, 0)
        check_choice("data.known", self.known, {"protocol", "all", "list", "random"})
        check_choice("data.storage", self.storage, STORAGE)
        if not self.splits:
            raise ConfigError("data.splits: empty; give at least one split index")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError(f"data.mean/std: {list(self.mean)} / {list(self.std)}: give both with one "
                              f"value per channel and std > 0, or both empty (computed)")
        if self.dataset == "imagefolder" and not self.folder:
            raise ConfigError("data.folder: empty; dataset 'imagefolder' needs the folder holding "
                              "train/<class>/* and test/<class>/*")
        protocol = DATASETS[self.dataset].protocol
        if self.known == "protocol":
            if protocol is None:
                raise ConfigError(f"data.known: {self.dataset!r} has no standard splits; valid here: "
                                  f"all, list, random")
            n = len(OSR_SPLITS[protocol])
            for s in self.splits:
                check_range(f"data.splits (split {s})", s, 0, n - 1)
        elif self.known in ("all", "list"):
            if list(self.splits) != [0]:
                raise ConfigError(f"data.splits: {list(self.splits)}; with data.known={self.known} there "
                                  f"is one split; valid: [0]")
        else:
            check_range("data.num_known", self.num_known, 1)
            for s in self.splits:
                check_range(f"data.splits (split {s})", s, 0)
        if self.known == "list":
            if not self.known_classes:
                raise ConfigError("data.known_classes: empty; with data.known=list give class names or ids")
            for c in self.known_classes:
                if isinstance(c, bool) or not isinstance(c, (int, str)):
                    raise ConfigError(f"data.known_classes: {c!r} is neither a class name nor an id")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "small_cnn"
    width: int = 16                 # base channel width of small_cnn (resnet18/vgg32 are fixed)

    def __post_init__(self):
        check_choice("model.name", self.name, MODELS)
        check_range("model.width", self.width, 1)


LAUNCHERS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class SlurmConfig:
    """``train.slurm``: the sbatch parameters of each job with ``train.launcher: slurm`` (gradmix.launcher)."""

    partition: str = ""             # --partition; "" = the cluster's default
    account: str = ""               # --account; "" = your default account
    gpus_per_job: int = 1           # --gpus-per-node
    cpus_per_job: int = 8           # --cpus-per-task: each job's CPU cores (its torch threads: train.threads)
    mem_gb: int = 32                # --mem
    time_min: int = 240             # --time in minutes; a job that reaches it is requeued and resumes
    max_timeouts: int = 20          # requeues after reaching time_min before a run is given up (pre-emptions do not count)
    setup: tuple[str, ...] = ()     # shell lines run before each job (module load ..., source .venv/bin/activate)
    extra: dict = field(default_factory=dict, hash=False)   # any other sbatch flag, e.g. {qos: high, constraint: h100}

    def __post_init__(self):
        for key in ("gpus_per_job", "max_timeouts"):
            check_range(f"train.slurm.{key}", getattr(self, key), 0)
        for key in ("cpus_per_job", "mem_gb", "time_min"):
            check_range(f"train.slurm.{key}", getattr(self, key), 1)
        if not isinstance(self.extra, Mapping):
            raise ConfigError(f"train.slurm.extra: expected a mapping of sbatch flags, e.g. {{qos: high}}, "
                              f"got {self.extra!r}")
        for k, v in self.extra.items():
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", k):
                raise ConfigError(f"train.slurm.extra: {k!r} is not an sbatch flag name (e.g. qos, constraint, "
                                  f"mail_type)")
            if isinstance(v, (dict, list, tuple)) or v is None or v is False:
                raise ConfigError(f"train.slurm.extra.{k}: {v!r}; give a string or number (true: a flag "
                                  f"without value)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 64
    optimizer: str = "sgd"          # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9           # sgd only
    nesterov: bool = False          # sgd only
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | constant (per step, after warm-up) | cosine_restarts
    warmup_epochs: int = 0
    restarts: int = 0               # cosine_restarts: restarts, period = epochs // (restarts + 1) (Vaze et al.)
    min_lr_factor: float = 0.0      # cosine_restarts: the lr floor as a fraction of lr (Vaze et al.: 1e-3)
    label_smoothing: float = 0.0
    randaugment_n: int = 0          # RandAugment ops per image (gradmix.randaugment, Vaze et al.); 0 = off
    randaugment_m: int = 9          # its magnitude, 0..30
    randaugment_policy: str = "standard"   # standard | digits (Vaze's MNIST/SVHN list)
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    threads: int = 2                # torch CPU threads of every stage (pin_threads); bit-identical results need the same count
    progress: bool = True           # one line per epoch (loss, accuracy, AUROC)
    checkpoint_every: int = 1       # epochs between resumable checkpoints; 0 = none (gradmix.checkpoint)
    checkpoint_dir: str = "checkpoints"  # checkpoints and finished-run copies: <dir>/<run dir>; "" = <run>.ckpt
    precision: str = "fp32"         # fp32 | bf16 | fp16 (torch.autocast; fp16 with a gradient scaler) (gradmix.precision)
    channels_last: bool = False     # model and batches in channels-last memory format
    compile: bool = False           # torch.compile of each model stage (start-up cost: docs/speed.md)
    max_data_fraction: float = 0.5  # a split's images may take at most this share of device memory (CPU: available RAM); 0 = no check
    launcher: str = "inline"        # inline: one run after another here | local: a process per run | slurm: a job per run
    workers: int = 0                # runs at once; 0 = local: one per visible GPU (1 without), slurm: all
    log_dir: str = "logs"           # local/slurm: each job's log files, <log_dir>/<method>/<run>/ (shared disk for slurm)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self):
        check_range("train.epochs", self.epochs, 1)
        check_range("train.threads", self.threads, 1)
        check_range("train.checkpoint_every", self.checkpoint_every, 0)
        check_range("train.batch_size", self.batch_size, 1)
        check_choice("train.optimizer", self.optimizer, {"sgd", "adam"})
        check_range("train.lr", self.lr, 0.0, low_open=True)
        check_range("train.momentum", self.momentum, 0.0, 1.0)
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_choice("train.schedule", self.schedule, {"cosine", "constant", "cosine_restarts"})
        check_range("train.restarts", self.restarts, 0, self.epochs - 1)
        check_range("train.min_lr_factor", self.min_lr_factor, 0.0, 1.0)
        check_range("train.warmup_epochs", self.warmup_epochs, 0, self.epochs)   # = epochs: all warm-up
        check_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0)
        check_range("train.randaugment_n", self.randaugment_n, 0)
        check_range("train.randaugment_m", self.randaugment_m, 0, RANDAUGMENT_MAX_M)
        check_choice("train.randaugment_policy", self.randaugment_policy, RANDAUGMENT_POLICIES)
        if not self.seeds:
            raise ConfigError("train.seeds: empty; give at least one seed")
        if not (self.device in {"auto", "cpu", "cuda"} or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device: unknown value {self.device!r}; valid: auto, cpu, cuda, cuda:N")
        check_choice("train.precision", self.precision, PRECISIONS)
        check_range("train.max_data_fraction", self.max_data_fraction, 0.0, 1.0)
        check_choice("train.launcher", self.launcher, LAUNCHERS)
        check_range("train.workers", self.workers, 0)
        if self.launcher != "inline" and not self.log_dir:
            raise ConfigError(f"train.log_dir: empty; train.launcher {self.launcher} needs a folder for the job logs")
        if isinstance(self.slurm, Mapping):          # from params.yaml or config.replace: validate the section
            object.__setattr__(self, "slurm", build(SlurmConfig, self.slurm, "train.slurm"))
        elif not isinstance(self.slurm, SlurmConfig):
            raise ConfigError(f"train.slurm: expected a mapping of sbatch parameters, got {self.slurm!r}")


@dataclass(frozen=True)
class MethodConfig:
    """One training method: a mixer, how its output is used, and the mixer's own options."""

    name: str
    mixer: str
    use: str = "replace"            # replace: train on the mixed batch; extra: clean + weighted mixed
    options: Any = None             # the mixer's validated options dataclass
    kind: str = "ce"                # ce: cross-entropy trainer | distill: student of a teacher (gradmix.teacher)
    distill: Any = None             # kind distill: its validated DistillOptions

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> "MethodConfig":
        where = f"methods.{name}"
        if not isinstance(values, Mapping) or "mixer" not in values:
            raise ConfigError(f"{where}: needs a 'mixer' key; valid mixers: {sorted(MIXERS)}")
        values = dict(values)
        mixer = values.pop("mixer")
        check_choice(f"{where}.mixer", mixer, MIXERS)
        use = values.pop("use", "replace")
        check_choice(f"{where}.use", use, {"replace", "extra"})
        if mixer == "none" and use != "replace":
            raise ConfigError(f"{where}.use: mixer 'none' has no mixed batch; use 'replace'")
        kind = values.pop("kind", "ce")
        distill = values.pop("distill", None)
        check_choice(f"{where}.kind", kind, {"ce", "distill"})
        if kind == "distill":
            distill = distill_options(where, mixer, use, distill)
        elif distill is not None:
            raise ConfigError(f"{where}.distill: only a method with kind 'distill' takes distill options")
        options = build(MIXERS[mixer].options, values, where)
        if getattr(options, "attribution_pass", "separate") == "shared" and use != "extra":
            raise ConfigError(f"{where}.attribution_pass: 'shared' reuses the clean batch's forward, which only "
                              f"use 'extra' trains on; with use {use!r} set attribution_pass: separate "
                              f"(valid: shared with use extra, separate with any use)")
        return cls(name=name, mixer=mixer, use=use, options=options, kind=kind, distill=distill)

    def to_dict(self) -> dict:
        out = {"mixer": self.mixer, "use": self.use, **dataclasses.asdict(self.options)}
        if self.kind != "ce":
            out.update(kind=self.kind, distill=dataclasses.asdict(self.distill))
        return out


@dataclass(frozen=True)
class EvalConfig:
    """Metrics, and the paired differences between methods (gradmix.statistics) the tables report."""

    scores: tuple[str, ...] = ("msp", "mls")
    primary_score: str = "mls"      # the score used for figures (ROC, distributions) and differences
    baseline: str = "erm"           # every cross-entropy method is compared with it ("" = none)
    pairs: tuple[tuple[str, ...], ...] = (("gradmix", "gradmix_random"), ("gradmix_ce", "gradmix"),
                                          ("gradmix_ce", "gradmix_random"),
                                          ("gradmix_shared", "gradmix"))   # more (a, b) comparisons
    confidence: float = 0.95        # of the paired-bootstrap interval of each mean difference
    bootstrap_resamples: int = 10000
    bootstrap_seed: int = 0

    def __post_init__(self):
        for s in self.scores:
            check_choice("evaluate.scores", s, SCORES)
        check_choice("evaluate.primary_score", self.primary_score, self.scores)
        for p in self.pairs:
            if len(p) != 2 or p[0] == p[1]:
                raise ConfigError(f"evaluate.pairs: {list(p)} is not a pair of two different methods; valid: "
                                  f"[a, b], the mean difference a - b is reported")
        check_range("evaluate.confidence", self.confidence, 0.0, 1.0, low_open=True, high_open=True)
        check_range("evaluate.bootstrap_resamples", self.bootstrap_resamples, 100)


@dataclass(frozen=True)
class BenchConfig:
    """bench/bench.py: step time of each method on one model, batch and machine (random inputs)."""

    model: str = "small_cnn"
    width: int = 32
    image_size: int = 32
    channels: int = 3
    num_classes: int = 6
    batch_size: int = 128
    warmup: int = 3
    repeats: int = 2
    methods: tuple[str, ...] = ()   # empty = every method of `methods`
    device: str = "auto"
    rounds: int = 24                # interleaved timing rounds; a method's time is the median over rounds
    precision: str = "fp32"         # fp32 | bf16 | fp16 (the other of fp32/bf16 is timed for erm and shared GradMix too)
    channels_last: bool = False     # the other layout is timed for erm and shared GradMix too
    compile: bool = False           # torch.compile each model's stages (startup_seconds: the first step)
    clock: str = "auto"             # auto (CPU time on a 1-thread CPU device, else wall) | wall | cpu
    threads: int = 1                # torch CPU threads while timing (instead of train.threads); 0 = train.threads

    def __post_init__(self):
        check_choice("bench.model", self.model, MODELS)
        check_range("bench.threads", self.threads, 0)
        check_choice("bench.clock", self.clock, {"auto", "wall", "cpu"})
        check_choice("bench.precision", self.precision, PRECISIONS)
        for key in ("width", "image_size", "channels", "batch_size", "repeats", "rounds"):
            check_range(f"bench.{key}", getattr(self, key), 1)
        check_range("bench.num_classes", self.num_classes, 2)
        check_range("bench.warmup", self.warmup, 0)


@dataclass(frozen=True)
class OODConfig:
    """Out-of-distribution evaluation (gradmix.ood): the known-class test set against each OOD set."""

    near: tuple[str, ...] = ("rotated",)
    far: tuple[str, ...] = ("photo_patches", "uniform_noise")
    scores: tuple[str, ...] = ("msp", "mls")
    num_generated: int = 300        # images of each generated set (photo_patches, uniform_noise)
    max_images: int = 0             # cap per set (seeded subsample), 0 = all
    places365_subset: int = 10000   # the fixed Places365 subset: this many val_256 images, drawn with `seed`
    seed: int = 0

    def __post_init__(self):
        for s in self.near + self.far:
            check_choice("ood.near/far", s, OOD_SETS)
        if set(self.near) & set(self.far):
            raise ConfigError(f"ood: {sorted(set(self.near) & set(self.far))} listed as both near and far")
        for s in self.scores:
            check_choice("ood.scores", s, SCORES)
        check_range("ood.num_generated", self.num_generated, 1)
        check_range("ood.max_images", self.max_images, 0)
        check_range("ood.places365_subset", self.places365_subset, 1)


@dataclass(frozen=True)
class CorruptionConfig:
    """Corruption robustness (gradmix.corruption): accuracy on corrupted known-class test images."""

    source: str = "on_the_fly"      # on_the_fly: corrupt the test images here | cifar10c: the official archive
    corruptions: tuple[str, ...] = ("gaussian_noise", "impulse_noise", "defocus_blur", "motion_blur",
                                    "contrast", "pixelate")   # 2 noise, 2 blur, 2 digital
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)
    max_images: int = 0             # cap on test images (seeded subsample), 0 = all
    seed: int = 0

    def __post_init__(self):
        check_choice("corruption.source", self.source, {"on_the_fly", "cifar10c"})
        valid = CORRUPTIONS if self.source == "on_the_fly" else CIFAR10C_CORRUPTIONS
        for c in self.corruptions:
            check_choice(f"corruption.corruptions ({self.source})", c, valid)
        if self.corruptions and not self.severities:
            raise ConfigError("corruption.severities: empty; valid: a subset of [1, 2, 3, 4, 5]")
        for s in self.severities:
            check_range("corruption.severities", s, 1, 5)
        check_range("corruption.max_images", self.max_images, 0)


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher of the distilled students (gradmix.teacher); it trains with the ``train`` recipe."""

    name: str = "small_cnn"         # small_cnn | resnet18 | vgg32
    width: int = 16                 # small_cnn base width
    dir: str = "runs/teacher"       # teacher runs: dir/split<k>-seed<s>; "" = on demand in a temp dir (not in params.yaml: check_templated)

    def __post_init__(self):
        ModelConfig(self.name, self.width)   # validates name and width

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(self.name, self.width)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    methods: dict = field(default_factory=dict)          # name -> MethodConfig
    pipeline_methods: tuple[str, ...] = ()               # the methods the pipeline runs, in order
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    smoke: dict = field(default_factory=dict)            # overrides applied by apply_smoke()
    bench: BenchConfig = field(default_factory=BenchConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    contrastive: Any = None                              # gradmix.contrastive.ContrastiveConfig, or None
    pipeline_distill: tuple[str, ...] = ()               # of pipeline_methods: the distilled students
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # one line per profile value replaced by an explicit one (params.yaml or --set), from load()
    overridden: tuple[str, ...] = field(default=(), compare=False)

    def method(self, name: str) -> MethodConfig:
        if name not in self.methods:
            raise ConfigError(f"unknown method {name!r}; valid methods: {sorted(self.methods)}")
        return self.methods[name]

    def to_dict(self) -> dict:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
            "methods": {k: m.to_dict() for k, m in self.methods.items()},
            "pipeline": {"methods": [m for m in self.pipeline_methods if m not in self.pipeline_distill],
                         "distill": list(self.pipeline_distill)},
            "evaluate": dataclasses.asdict(self.evaluate),
            "smoke": dict(self.smoke),
            "bench": dataclasses.asdict(self.bench),
            "ood": dataclasses.asdict(self.ood),
            "corruption": dataclasses.asdict(self.corruption),
            "profile": dataclasses.asdict(self.profile),
            "teacher": dataclasses.asdict(self.teacher),
            **({"contrastive": self.contrastive.to_dict()} if self.contrastive is not None else {}),
        }


SECTIONS = ("data", "model", "train", "methods", "pipeline", "evaluate", "smoke", "bench", "ood", "corruption",
            "profile", "contrastive", "teacher")


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a params mapping (as in ``params.yaml``) into a :class:`Config`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"params: expected a mapping at top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"params: unknown section(s) {unknown}; valid sections: {list(SECTIONS)}")
    methods_raw = raw.get("methods") or {}
    if not isinstance(methods_raw, Mapping):
        raise ConfigError("methods: expected a mapping name -> method options")
    for name in methods_raw:
        check_name(f"methods.{name}", name)
    if isinstance(raw.get("contrastive"), Mapping) and isinstance(raw["contrastive"].get("methods"), Mapping):
        for name in raw["contrastive"]["methods"]:
            check_name(f"contrastive.methods.{name}", name)
    methods = {name: MethodConfig.from_dict(name, v) for name, v in methods_raw.items()}
    pipeline = raw.get("pipeline") or {}
    if not isinstance(pipeline, Mapping) or set(pipeline) - {"methods", "distill"}:
        raise ConfigError("pipeline: expected a mapping with the keys 'methods' and (optional) 'distill'")
    for key in ("methods", "distill"):
        if not isinstance(pipeline.get(key, []), (list, tuple)):
            raise ConfigError(f"pipeline.{key}: expected a list of method names, got {pipeline[key]!r}")
    students = tuple(pipeline.get("distill") or ())
    run = tuple(pipeline.get("methods", [m for m in methods if methods[m].kind == "ce"]) or ()) + students
    if "methods" in pipeline and len(run) == len(students):    # written empty (no pipeline at all: Python use)
        raise ConfigError(f"pipeline.methods: empty; the pipeline trains and reports at least one cross-entropy "
                          f"method; valid: names of kind-ce methods, e.g. {[m for m in methods if methods[m].kind == 'ce'][:3]}")
    for key, names, kind in (("methods", run[:len(run) - len(students)], "ce"), ("distill", students, "distill")):
        check_unique(f"pipeline.{key}", names)
        for m in names:
            check_choice(f"pipeline.{key}", m, methods)
            if methods[m].kind != kind:
                raise ConfigError(f"pipeline.{key}: {m!r} has kind {methods[m].kind!r}; list kind 'ce' methods "
                                  f"under pipeline.methods and kind 'distill' ones under pipeline.distill")
    smoke = raw.get("smoke") or {}
    if not isinstance(smoke, Mapping):
        raise ConfigError("smoke: expected a mapping section -> overrides")
    cfg = Config(
        data=build(DataConfig, raw.get("data"), "data"),
        model=build(ModelConfig, raw.get("model"), "model"),
        train=build(TrainConfig, raw.get("train"), "train"),
        methods=methods,
        pipeline_methods=run,
        evaluate=build(EvalConfig, raw.get("evaluate"), "evaluate"),
        smoke=dict(smoke),
        bench=build(BenchConfig, raw.get("bench"), "bench"),
        ood=build(OODConfig, raw.get("ood"), "ood"),
        corruption=build(CorruptionConfig, raw.get("corruption"), "corruption"),
        profile=build(ProfileConfig, raw.get("profile"), "profile"),
        contrastive=_contrastive(raw.get("contrastive")),
        pipeline_distill=students,
        teacher=build(TeacherConfig, raw.get("teacher"), "teacher"),
    )
    for m in cfg.bench.methods:
        check_choice("bench.methods", m, methods)
    names = set(methods) | set(cfg.contrastive.methods if cfg.contrastive is not None else ())
    written = raw.get("evaluate") or {}           # the built-in names are checked where params write them
    if written.get("baseline"):
        check_choice("evaluate.baseline", cfg.evaluate.baseline, set(methods) | {""})
    for p in cfg.evaluate.pairs if "pairs" in written else ():
        for m in p:
            check_choice(f"evaluate.pairs ({list(p)})", m, names)
    shared = sorted(set(methods) & set(cfg.contrastive.methods if cfg.contrastive is not None else ()))
    if shared:
        raise ConfigError(f"methods and contrastive.methods both define {shared}: a name selects its trainer "
                          f"(gradmix.trainers) and its folder runs/<name>/; rename one of them")
    apply_smoke(cfg)  # validate the smoke overrides now, not when a notebook first needs them
    return cfg


def _contrastive(raw):
    """The optional ``contrastive`` section (gradmix.contrastive.ContrastiveConfig), or None if absent."""
    if raw is None:
        return None
    return ContrastiveConfig.from_dict(raw)


def load(path: str | Path = "params.yaml", *, smoke: bool = False, profile: str | None = None,
         overrides: Mapping[str, Any] | list[str] | None = None) -> Config:
    """Load and validate ``params.yaml``: its profile, then (``smoke=True``) its ``smoke`` section, then
    ``overrides`` (``["train.epochs=3", ...]`` or ``{"train.epochs": 3}``; values parsed as YAML).

    Precedence, lowest first: the built-in defaults (:func:`builtin_defaults`, which params.yaml writes
    out), the profile ``profile.name`` of ``profile.file`` (``profile`` selects another one), values of
    params.yaml that differ from the built-in defaults (explicit: e.g. written by ``dvc exp run -S``),
    the smoke overrides, ``overrides`` (:func:`gradmix.profiles.resolve`). ``Config.overridden`` says
    which explicit values replaced a value of the profile. Raises ConfigError naming the file, key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()}")
    raw = read_params(path.read_text(), str(path))     # YAML, with method inheritance (<<: *base) checked
    check_complete(raw, path, SECTIONS)
    check_templated(raw, path, RESERVED)
    r = resolve(dict(raw), path.parent, smoke=smoke, profile=profile, overrides=overrides,
                defaults=builtin_defaults, smoke_sections=SMOKE_SECTIONS)
    try:
        cfg = from_dict(r.merged)
    except ConfigError as e:           # a profile value that no longer fits an explicit one: say where it is from
        explained = r.explain(e)
        if explained is None:
            raise
        raise explained from None
    pin_threads(cfg)
    return dataclasses.replace(cfg, overridden=tuple(r.notes))


def pin_threads(cfg: Config) -> int:
    """Set torch's CPU thread count to ``train.threads`` (``torch.set_num_threads``) and return it.

    Every stage calls it: :func:`load` does (each notebook, the CLI and bench load params.yaml through
    it), and both trainers do again when a run starts (a Config built in Python). The thread count
    changes how float sums are split, so on the CPU a run is bit-identical only at the same count
    (and CPU type and library versions; docs/reproducibility.md); it is recorded in each run's
    config.json. torch's inter-op pool is left alone (it can only be set before any parallel work).
    """
    import torch

    torch.set_num_threads(cfg.train.threads)
    return cfg.train.threads


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED = ("teacher",)          # the distillation teacher's run name (gradmix.teacher; gradmix train --method teacher)


def check_name(where: str, name: Any) -> None:
    """A method name becomes a folder (runs/<name>) and a DVC stage name (train@<name>): letters, digits,
    ``_``, ``.``, ``-``, not starting with ``.``/``_``/``-``. (``teacher`` is refused in params files by
    :func:`check_templated`; the teacher's own runs carry it.)"""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: method name {name!r} cannot name a run folder and a DVC stage; valid: "
                          f"letters, digits, _ . - (starting with a letter or digit)")


def apply_profile(raw: Mapping[str, Any], base_dir: str | Path = ".", notes: list | None = None) -> dict:
    """``raw`` with its selected profile merged in, explicit values kept (:func:`gradmix.profiles.apply_profile`
    with the built-in defaults of :func:`builtin_defaults`)."""
    return profiles.apply_profile(raw, base_dir, notes, defaults=builtin_defaults)


def builtin_defaults(raw: Mapping[str, Any] | None = None) -> dict:
    """The package's built-in value of every knob, as a params mapping.

    For the sections with a dataclass (data, model, train, evaluate, bench, ood, corruption, profile,
    teacher; contrastive train, views, knn, probe) the dataclass defaults, which ``params.yaml``
    writes out unchanged (tests/test_cli.py checks it). For each method of ``raw`` (``methods``,
    ``contrastive.methods``), the defaults of its mixer's or view's options. Lists, not tuples.
    """
    from .contrastive.config import ContrastiveTrainConfig, ViewConfig   # late: they import this module
    from .distill import DistillOptions
    from .knn import KnnConfig
    from .mixing import MIXERS
    from .probe import ProbeConfig

    def plain(obj):
        return yaml_values(dataclasses.asdict(obj))

    out = {name: plain(cls()) for name, cls in (
        ("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig), ("evaluate", EvalConfig),
        ("bench", BenchConfig), ("ood", OODConfig), ("corruption", CorruptionConfig),
        ("profile", ProfileConfig), ("teacher", TeacherConfig))}
    out["contrastive"] = {"train": plain(ContrastiveTrainConfig()), "views": plain(ViewConfig()),
                          "knn": plain(KnnConfig()), "probe": plain(ProbeConfig()), "methods": {}}
    raw = raw or {}
    methods = raw.get("methods") if isinstance(raw.get("methods"), Mapping) else {}
    out["methods"] = {}
    for name, m in methods.items():
        if isinstance(m, Mapping) and m.get("mixer") in MIXERS:
            out["methods"][name] = {"use": "replace", "kind": "ce", **plain(MIXERS[m["mixer"]].options())}
            if m.get("kind") == "distill":
                out["methods"][name]["distill"] = plain(DistillOptions())
    contrastive = raw.get("contrastive") if isinstance(raw.get("contrastive"), Mapping) else {}
    cmethods = contrastive.get("methods") if isinstance(contrastive.get("methods"), Mapping) else {}
    for name, m in cmethods.items():
        if isinstance(m, Mapping):
            d = {"gamma": 1.0, "mu": 1.0, "weight": "lam", "supcon_extra": False, "objective": "simclr"}
            if m.get("view") in MIXERS and m.get("view") != "none":
                opts = plain(MIXERS[m["view"]].options())
                d["options"] = {k: v for k, v in opts.items() if k not in ("objective", "weight")}
            out["contrastive"]["methods"][name] = d
    return out


def apply_smoke(cfg: Config) -> Config:
    """Return ``cfg`` with the ``smoke`` section's overrides (e.g. ``train: {epochs: 1}``) applied."""
    return replace(cfg, _where="smoke", **cfg.smoke)


SMOKE_SECTIONS = ("data", "model", "train", "evaluate", "ood", "corruption", "contrastive", "teacher")


def replace(cfg: Config, _where: str = "override", **sections: Mapping[str, Any]) -> Config:
    """Return ``cfg`` with some fields of some sections overridden, re-validated.

    Example: ``replace(cfg, train={"epochs": 2}, data={"splits": [0]})``.
    """
    out = cfg
    for section, overrides in sections.items():
        check_choice(f"{_where} section", section, SMOKE_SECTIONS)
        current = getattr(cfg, section)
        if section == "contrastive":
            if current is None:
                raise ConfigError(f"{_where}.contrastive: params has no 'contrastive' section to override")
            out = dataclasses.replace(out, contrastive=current.merged(overrides, f"{_where}.contrastive"))
            continue
        merged = {**dataclasses.asdict(current), **(overrides or {})}
        out = dataclasses.replace(out, **{section: build(type(current), merged, f"{_where}.{section}")})
    return out
