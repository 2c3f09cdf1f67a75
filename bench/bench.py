"""Train-step time of every method relative to ERM, GradMix's attribution overhead in both attribution
passes, and the speed switches (precision, channels-last, compile).

Usage: OMP_NUM_THREADS=1 python bench/bench.py [--params params.yaml] [--out results/bench.json]
       [--model resnet18 --precision bf16 --channels-last true ...]   (any field of params.yaml `bench`)

Each method's step is the trainer's own (gradmix.train.method_step: mixing, attribution, forward(s),
backward(s) under ``bench.precision``, then the optimiser step) on the same model architecture, the
same random batch and the same machine. Timing: one warm-up step (its time is reported as
``startup_seconds``: it includes torch.compile's compilation when ``bench.compile`` is on), then
``warmup`` more, then ``rounds`` rounds in which every method runs ``repeats`` timed steps in turn
(interleaved, so a busy spell of a shared machine hits every method alike). A method's time is the
median over rounds of its per-round medians and ``noise`` their spread ((max - min) / median);
ratios and overheads are computed within each round and their median over rounds is reported
(paired: a slow round slows ERM and GradMix alike). On CUDA the device is synchronised around each timed step. The clock
(``bench.clock``): on a CPU device run with one thread (OMP_NUM_THREADS=1) the process's CPU time by
default, which other jobs on a shared machine barely disturb; the wall clock otherwise (and always on
CUDA); both are written (``step_seconds`` by the chosen clock, ``wall_step_seconds``).

Attribution overhead (in ERM steps) of a GradMix variant = (t(GradMix) - t(the same with a random
centre)) / t(ERM): the cost of the maps alone, since the random centre draws the same box without
them. It is reported for ``objective`` gt_logit and ce, with ``attribution_pass`` separate (its own
forward and partial backward) and shared (maps from the clean training forward; see gradmix.steps),
each against the random-centre variant of the same pass (same forwards and BatchNorm treatment).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradmix import config, teacher  # noqa: E402
from gradmix.mixing import make_mixer  # noqa: E402
from gradmix.models import build_model  # noqa: E402
from gradmix.precision import Precision, prepare_model  # noqa: E402
from gradmix.train import check_method, host_rng, make_optimizer, method_step, resolve_device  # noqa: E402

OBJECTIVES = ("gt_logit", "ce")
PASSES = ("separate", "shared")
TARGETS = {"shared overhead, gt_logit (ERM steps)": ("attribution", "gt_logit", "shared", "overhead", 0.15),
           "shared overhead, ce (ERM steps)": ("attribution", "ce", "shared", "overhead", 0.05),
           "GradMix shared / ERM": ("attribution", "gt_logit", "shared", "gradmix_to_erm", 2.3)}


class Variant(NamedTuple):
    method: config.MethodConfig
    precision: str
    channels_last: bool


class Timer:
    """One variant's model, optimiser and step on the bench batch; ``__call__`` runs and times one step."""

    def __init__(self, cfg: config.Config, v: Variant, x: torch.Tensor, y: torch.Tensor, device):
        b = cfg.bench
        m = v.method
        torch.manual_seed(0)
        model = build_model(config.ModelConfig(name=b.model, width=b.width), b.channels, b.num_classes).to(device)
        check_method(m, model)
        prepare_model(model, channels_last=v.channels_last, compile=b.compile)
        model.train()
        self.device, self.y, self.k = device, y, b.num_classes
        self.precision = Precision(v.precision, device, v.channels_last)
        self.x = self.precision.batch(x)
        train_cfg = dataclasses.replace(cfg.train, precision=v.precision)
        self.opt = make_optimizer(model, train_cfg)
        mixer = make_mixer(m.mixer, m.options, host_rng(0))
        loss_fn = None
        if m.kind == "distill":   # the student step, with a frozen (untrained) teacher of the same shape
            loss_fn = teacher.benchmark_loss(cfg, m, model, mixer, b.channels, b.num_classes, device)
        self.step = method_step(m, model, mixer, self.precision, loss_fn)
        self.gen = torch.Generator(device=device).manual_seed(0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.startup = self()                       # the first step: compilation, allocator warm-up
        for _ in range(b.warmup):
            self()
        self.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        self.rounds: list[float] = []
        self.wall_rounds: list[float] = []

    def __call__(self, clock=time.perf_counter) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = clock()
        self.opt.zero_grad(set_to_none=True)
        self.step(self.x, self.y, self.k, self.gen, 0.0)
        self.precision.step(self.opt)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return clock() - start

    def timed(self, repeats: int, cpu_clock: bool) -> None:
        """One round: ``repeats`` steps; the median of the chosen clock (and of the wall clock)."""
        both = [self.both() for _ in range(repeats)]
        self.rounds.append(statistics.median(c if cpu_clock else w for w, c in both))
        self.wall_rounds.append(statistics.median(w for w, _ in both))

    def both(self) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        self()
        return time.perf_counter() - w0, time.process_time() - c0


def variants(cfg: config.Config) -> dict[str, Variant]:
    """The methods of ``bench.methods`` (all by default), the GradMix attribution variants and the
    switch comparisons, by name."""
    b = cfg.bench
    base = {m: Variant(cfg.method(m), b.precision, b.channels_last)
            for m in dict.fromkeys(["erm", *(b.methods or cfg.methods)])}
    g = cfg.method("gradmix")

    def gradmix(**options):
        return Variant(dataclasses.replace(g, use="extra", options=dataclasses.replace(g.options, **options)),
                       b.precision, b.channels_last)

    for p in PASSES:
        base[f"gradmix[random,{p}]"] = gradmix(centre="random", attribution_pass=p)
        for o in OBJECTIVES:
            base[f"gradmix[{o},{p}]"] = gradmix(centre="peak", objective=o, attribution_pass=p)
    other = "bf16" if b.precision == "fp32" else "fp32"
    for name in ("erm", "gradmix[gt_logit,shared]"):
        v = base[name]
        base[f"{name}@{other}"] = v._replace(precision=other)
        base[f"{name}@channels_last={not b.channels_last}"] = v._replace(channels_last=not b.channels_last)
    return base


def clock_name(cfg: config.Config, device) -> str:
    """``bench.clock``; auto: the process's CPU time on a CPU device with one thread (what a step costs
    an idle core, whatever else the shared machine runs), else the wall clock (always on CUDA)."""
    if cfg.bench.clock != "auto":
        return cfg.bench.clock
    return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"


def summary(cfg: config.Config, timers: dict[str, Timer], device) -> dict:
    """``timers``: name -> its Timer (variants that are the same step share one)."""
    b = cfg.bench
    rounds = {k: v.rounds for k, v in timers.items()}
    n = len(rounds["erm"])
    med = statistics.median

    def paired(fn) -> float:
        """The median over rounds of a quantity computed within each round (drift between rounds cancels)."""
        return med(fn({k: r[i] for k, r in rounds.items()}) for i in range(n))

    t = {k: med(r) for k, r in rounds.items()}
    wall = {k: med(v.wall_rounds) for k, v in timers.items()}
    noise = {k: (max(r) - min(r)) / t[k] for k, r in rounds.items()}
    ratio = {k: paired(lambda r, k=k: r[k] / r["erm"]) for k in rounds}
    attribution = {o: {p: {"overhead": paired(lambda r, o=o, p=p: (r[f"gradmix[{o},{p}]"] - r[f"gradmix[random,{p}]"])
                                              / r["erm"]),
                           "gradmix_to_erm": ratio[f"gradmix[{o},{p}]"],
                           "gradmix_ms": 1000 * t[f"gradmix[{o},{p}]"]} for p in PASSES} for o in OBJECTIVES}
    switches = {}
    for k in t:
        if "@" in k:
            name, switch = k.split("@")
            switches.setdefault(switch, {})[name] = paired(lambda r, k=k, name=name: r[k] / r[name])
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    result = {
        "machine": {"device": str(device), "cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "setup": dataclasses.asdict(b),
        "clock": clock_name(cfg, device),
        "step_seconds": t,
        "wall_step_seconds": wall,
        "ratio_to_erm": ratio,
        "images_per_second": {k: b.batch_size / v for k, v in t.items()},
        "noise": noise,
        "rounds": rounds,
        "startup_seconds": {k: v.startup for k, v in timers.items()},
        "peak_memory_mb": {k: v.peak_mb for k, v in timers.items()} if device.type == "cuda" else None,
        "attribution": attribution,
        "attribution_overhead": attribution["gt_logit"]["separate"]["overhead"],
        "switches": switches,
    }
    result["targets"] = {name: {"value": attribution[o][p][key], "target": limit, "met": attribution[o][p][key] <= limit}
                         for name, (_, o, p, key, limit) in TARGETS.items()}
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    for f in dataclasses.fields(config.BenchConfig):   # --model resnet18 --batch-size 256 --channels-last true ...
        if f.name != "methods":
            kind = type(getattr(config.BenchConfig(), f.name))
            p.add_argument(f"--{f.name.replace('_', '-')}",
                           type=(lambda s: {"true": True, "false": False}[s.lower()]) if kind is bool else kind)
    args = p.parse_args(argv)
    cfg = config.load(args.params)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(config.BenchConfig)
                 if f.name != "methods" and getattr(args, f.name) is not None}
    cfg = dataclasses.replace(cfg, bench=config.build(config.BenchConfig, {**dataclasses.asdict(cfg.bench), **overrides},
                                                      "bench"))
    b = cfg.bench
    device = resolve_device(b.device)
    torch.set_num_threads(b.threads or cfg.train.threads)   # config.load pinned train.threads
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b.batch_size, b.channels, b.image_size, b.image_size, generator=g).to(device)
    y = torch.randint(0, b.num_classes, (b.batch_size,), generator=g).to(device)

    todo = variants(cfg)
    unique: dict[str, Timer] = {}                       # a variant identical to a method shares its timer
    timers = {}
    for name, v in todo.items():                        # build + warm up, one after another
        key = json.dumps([v.method.to_dict(), v.precision, v.channels_last], sort_keys=True, default=list)
        if key not in unique:
            unique[key] = Timer(cfg, v, x, y, device)
        timers[name] = unique[key]
    cpu_clock = clock_name(cfg, device) == "cpu"
    for r in range(b.rounds):                           # interleaved timed rounds
        for timer in unique.values():
            timer.timed(b.repeats, cpu_clock)
        print(f"round {r + 1}/{b.rounds} done ({len(unique)} distinct steps)", flush=True)
    result = summary(cfg, timers, device)
    for name, s in result["step_seconds"].items():
        print(f"{name:>32}: {1000 * s:8.2f} ms/step  ({result['ratio_to_erm'][name]:.2f}x ERM, "
              f"noise {100 * result['noise'][name]:.0f} %)", flush=True)
    for o, by_pass in result["attribution"].items():
        for ps, a in by_pass.items():
            print(f"attribution overhead, objective {o}, {ps}: {a['overhead']:.2f} x ERM step; "
                  f"GradMix {a['gradmix_to_erm']:.2f} x ERM")
    for name, tgt in result["targets"].items():
        print(f"target {name}: {tgt['value']:.2f} (<= {tgt['target']}) {'met' if tgt['met'] else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
