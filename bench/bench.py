"""Train-step time of every method relative to ERM, and GradMix's attribution overhead.

Usage: python bench/bench.py [--params params.yaml] [--out results/bench.json] [--model resnet18 ...]

Each method's step (mixing, forward, backward, optimiser step) runs on the same model architecture,
the same random batch and the same machine; the reported time is the median over ``repeats`` steps
after ``warmup`` steps. attribution_overhead = (t(gradmix) - t(gradmix_random)) / t(erm): the cost of
the attribution pass alone, since gradmix_random draws the same box without it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradmix import config, teacher  # noqa: E402
from gradmix.mixing import make_mixer  # noqa: E402
from gradmix.models import build_model  # noqa: E402
from gradmix.train import check_method, make_optimizer, resolve_device, training_loss  # noqa: E402


def step_time(cfg: config.Config, method: str, x: torch.Tensor, y: torch.Tensor, device) -> float:
    """Median seconds of one training step of ``method``."""
    b = cfg.bench
    m = cfg.method(method)
    torch.manual_seed(0)
    model = build_model(config.ModelConfig(name=b.model, width=b.width), b.channels, b.num_classes).to(device)
    check_method(m, model)
    model.train()
    opt = make_optimizer(model, cfg.train)
    mixer = make_mixer(m.mixer, m.options)
    gen = torch.Generator(device=device).manual_seed(0)
    loss_fn = partial(training_loss, model, mixer, m.use)
    if m.kind == "distill":   # the student step, with a frozen (untrained) teacher of the same shape
        loss_fn = teacher.benchmark_loss(cfg, m, model, mixer, b.channels, b.num_classes, device)
    times = []
    for i in range(b.warmup + b.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = loss_fn(x, y, b.num_classes, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= b.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    for f in dataclasses.fields(config.BenchConfig):   # --model resnet18 --batch-size 256 ...
        if f.name != "methods":
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(config.BenchConfig(), f.name)))
    args = p.parse_args(argv)
    cfg = config.load(args.params)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(config.BenchConfig)
                 if f.name != "methods" and getattr(args, f.name) is not None}
    cfg = dataclasses.replace(cfg, bench=dataclasses.replace(cfg.bench, **overrides))
    b = cfg.bench
    methods = list(b.methods) or list(cfg.methods)
    for required in ("erm", "gradmix", "gradmix_random"):
        cfg.method(required)
    device = resolve_device(b.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b.batch_size, b.channels, b.image_size, b.image_size, generator=g).to(device)
    y = torch.randint(0, b.num_classes, (b.batch_size,), generator=g).to(device)

    seconds = {}
    for m in dict.fromkeys(["erm", *methods, "gradmix", "gradmix_random"]):
        seconds[m] = step_time(cfg, m, x, y, device)
        print(f"{m:>18}: {1000 * seconds[m]:8.2f} ms/step  ({seconds[m] / seconds['erm']:.2f}x ERM)", flush=True)
    result = {
        "machine": {"device": str(device), "cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "setup": dataclasses.asdict(b),
        "step_seconds": seconds,
        "ratio_to_erm": {m: s / seconds["erm"] for m, s in seconds.items()},
        "attribution_overhead": (seconds["gradmix"] - seconds["gradmix_random"]) / seconds["erm"],
    }
    print(f"attribution overhead: {result['attribution_overhead']:.2f} x ERM step")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
