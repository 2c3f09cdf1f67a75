"""One-shot GPU check (``make gpu-check``): tests, step benchmark and real epochs on CUDA in ≤ 8 minutes.

Usage: python bench/gpu_check.py [--budget 480] [--out results/bench_cuda.json] [--parts tests,bench,epoch]
       python bench/gpu_check.py --device cpu --quick      (the script's own logic on the CPU, in seconds)

Three parts, in this order, each time-boxed (a share of ``--budget``; time a part leaves unused goes
to the next one; what does not fit is skipped with a note):

1. ``tests``: ``pytest -m cuda`` in a subprocess with ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (the tests
   marked ``cuda``: every mixer and the attribution pass agree on CPU and CUDA, one training step of
   every method, same seed -> same scores under ``torch.use_deterministic_algorithms``, which ops need
   the cuBLAS workspace setting); outcome, time and notes of each test.
2. ``bench``: the step benchmark, bench/bench.py (its ``main``, one call per point), for small_cnn and
   resnet18 at 32 px, batch 128 and 512, precision fp32 and bf16, channels_last off and on: ms per
   step, images/s and peak memory of ERM; GradMix's ms per step, GradMix/ERM and attribution overhead
   (t(GradMix) - t(the same with a random centre)) / t(ERM) for each attribution pass bench.py
   measures (``separate``, ``shared``).
3. ``epoch``: the real trainer (gradmix.trainers.train_run) for two epochs of a synthetic CIFAR-sized
   set (50,000 noise images, 32 px, 10 classes, closed set; the paper_cifar10 recipe: batch 128, SGD)
   with ResNet-18, for ERM and GradMix: seconds of the first epoch (CUDA warm-up included) and of the
   second; an epoch's time includes its evaluation on the 10,000 test images.

The speed knobs (``train.precision``, ``train.channels_last``, GradMix's ``attribution_pass``) are
read through the configuration (:func:`knobs`): a gradmix without one of them measures what it has
(fp32, contiguous, separate) and records the rest as skipped, naming the missing knob.

Writes ``--out`` after every measurement (so a killed run leaves what it measured) and prints a short
table at the end. Without a CUDA device (and without ``--device cpu``) it says so, writes nothing
and exits 0. Exit status 1 if a test failed, else 0.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib.util
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradmix import config, trainers  # noqa: E402
from gradmix import data as gdata  # noqa: E402
from gradmix.datasets import DatasetInfo, RawDataset  # noqa: E402
from gradmix.mixing import GradMixOptions  # noqa: E402

BUDGET_S = 480                                   # 8 minutes on one GPU
SHARES = {"tests": 0.35, "bench": 0.30, "epoch": 0.35}
PARTS = tuple(SHARES)
TODAY = {"precision": "fp32", "channels_last": False}      # what a gradmix without the speed knobs does
STAGES = {"small_cnn": ("stage2", "stage3"), "resnet18": ("layer3", "layer4")}
SYNTHETIC = "synthetic_cifar"


class Overtime(Exception):
    """A measurement ran past its part's time box."""


class Missing(Exception):
    """This gradmix has no knob for what a measurement asks for."""


# --- configurations -----------------------------------------------------------------------------

def knobs(cfg: config.Config, **train) -> config.Config:
    """``cfg`` with the speed knobs ``train`` set (e.g. precision="bf16", channels_last=True) through
    :func:`gradmix.config.replace`. A knob this gradmix lacks is fine at today's behaviour
    (:data:`TODAY`) and raises :class:`Missing` otherwise."""
    have = {f.name for f in dataclasses.fields(config.TrainConfig)}
    for k, v in train.items():
        if k not in have and v != TODAY[k]:
            raise Missing(f"train.{k} is not a knob of this gradmix")
    present = {k: v for k, v in train.items() if k in have}
    return config.replace(cfg, train=present) if present else cfg


def gradmix_variant(m: config.MethodConfig, name: str, attribution_pass: str, stages) -> config.MethodConfig:
    """GradMix method ``m`` as ``name`` with ``attribution_pass`` and ``stages``; a gradmix without the
    option runs ``separate`` (its only pass) and raises :class:`Missing` for ``shared``."""
    values = {**m.to_dict(), "stages": list(stages)}
    if "attribution_pass" in {f.name for f in dataclasses.fields(GradMixOptions)}:
        values["attribution_pass"] = attribution_pass
    elif attribution_pass != "separate":
        raise Missing("methods.gradmix.attribution_pass is not an option of this gradmix")
    return config.MethodConfig.from_dict(name, values)


def with_methods(cfg: config.Config, stages, skipped: list) -> tuple[config.Config, list[str]]:
    """``cfg`` with ``erm``, ``gradmix_random`` and the GradMix variants ``gradmix_separate`` /
    ``gradmix_shared`` on ``stages``; returns it and the variants that exist (others -> ``skipped``)."""
    methods = dict(cfg.methods)
    methods["gradmix_random"] = config.MethodConfig.from_dict(
        "gradmix_random", {**cfg.method("gradmix_random").to_dict(), "stages": list(stages)})
    present = []
    for mode in ("separate", "shared"):
        try:
            methods[f"gradmix_{mode}"] = gradmix_variant(cfg.method("gradmix"), f"gradmix_{mode}", mode, stages)
            present.append(mode)
        except Missing as e:
            skipped.append(f"attribution_pass {mode}: {e}")
    return dataclasses.replace(cfg, methods=methods), present


# --- time boxes and the report ------------------------------------------------------------------

@contextlib.contextmanager
def time_box(seconds: float):
    """Raise :class:`Overtime` in this (main) thread if the block runs longer than ``seconds``."""
    if seconds <= 1:
        raise Overtime(f"no time left ({seconds:.0f} s)")

    def ring(signum, frame):
        raise Overtime(f"over its {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Report:
    """The JSON result, rewritten atomically after every change."""

    def __init__(self, path: Path, head: dict):
        self.path, self.data = Path(path), head

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial")
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)


def environment(device: torch.device) -> dict:
    out = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{p.major}.{p.minor}")
    out["knobs"] = {"train.precision": "precision" in {f.name for f in dataclasses.fields(config.TrainConfig)},
                    "train.channels_last": "channels_last" in {f.name for f in dataclasses.fields(config.TrainConfig)},
                    "gradmix.attribution_pass": "attribution_pass" in {f.name for f in dataclasses.fields(GradMixOptions)}}
    return out


# --- part 1: the tests marked cuda ----------------------------------------------------------------

def run_tests(seconds: float, quick: bool) -> dict:
    """``pytest -m cuda`` (quick: tests/test_cuda.py only) in a subprocess limited to ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider", f"--junitxml={xml}",
               "-o", "junit_logging=system-out", "tests/test_cuda.py" if quick else "tests"]
        env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
               "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1, seconds))
            out, timed_out = proc.stdout, False
        except subprocess.TimeoutExpired as e:
            out, timed_out = e.stdout or "", True
            out = out.decode() if isinstance(out, bytes) else out
        result = parse_junit(xml) if xml.is_file() else parse_verbose(out)
        result.update(seconds=round(time.perf_counter() - start, 1), command=" ".join(cmd[1:]))
        if timed_out:
            result["note"] = f"stopped after {seconds:.0f} s (time box); outcomes read from pytest's -v lines"
        elif not result["cases"]:
            result["note"] = "pytest ran no test: " + " ".join(out.strip().splitlines()[-1:])
        return result


def parse_junit(path: Path) -> dict:
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        name = f"{tc.get('classname', '').replace('.', '/')}.py::{tc.get('name')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = tc.find(tag)
            if node is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (node.get("message") or "").strip()[:500]
                break
        out = tc.findtext("system-out") or ""
        notes = [line.split("gpu-check:", 1)[1].strip() for line in out.splitlines() if "gpu-check:" in line]
        cases.append({"test": name, "outcome": outcome, "seconds": float(tc.get("time", 0)), "message": message,
                      "notes": notes})
    return _summary(cases)


def parse_verbose(text: str) -> dict:
    """Outcomes from ``pytest -v`` lines (``tests/x.py::test_y PASSED [ 10%]``), when there is no XML."""
    cases = []
    for line in text.splitlines():
        for word, outcome in (("PASSED", "passed"), ("FAILED", "failed"), ("ERROR", "failed"), ("SKIPPED", "skipped")):
            if "::" in line and f" {word}" in line:
                cases.append({"test": line.split(" ")[0], "outcome": outcome, "seconds": None, "message": "",
                              "notes": []})
                break
    return _summary(cases)


def _summary(cases: list[dict]) -> dict:
    count = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {**count, "cases": cases}


# --- part 2: the step benchmark -------------------------------------------------------------------

@cache
def bench_module():
    spec = importlib.util.spec_from_file_location("gradmix_bench", ROOT / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_grid(quick: bool) -> list[dict]:
    """Every (model, batch, precision, channels_last) of the benchmark, most telling first."""
    models = ("resnet18", "small_cnn")
    batches = (4, 8) if quick else (128, 512)
    return [{"model": m, "batch": b, "precision": p, "channels_last": cl}
            for m in models for b in batches for p, cl in (("fp32", False), ("bf16", False), ("fp32", True),
                                                             ("bf16", True))]


def bench_params(params: Path, model: str, folder: Path) -> Path:
    """A params file for bench/bench.py: ``bench.methods: [erm]`` (bench.py adds the GradMix variants it
    compares) and every method's attribution stages set to ``model``'s last two."""
    raw = yaml.safe_load(params.read_text())             # YAML merge keys resolved
    raw["bench"] = {**(raw.get("bench") or {}), "methods": ["erm"]}
    for m in (raw.get("methods") or {}).values():
        if isinstance(m, dict) and "stages" in m:
            m["stages"] = list(STAGES[model])
    path = folder / f"params_{model}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def bench_argv(point: dict, params: Path, out: Path, device: torch.device, quick: bool) -> list[str]:
    """bench/bench.py's command line for ``point`` (its flags are the fields of params.yaml ``bench``); a
    switch this gradmix's bench lacks is fine at today's behaviour and raises :class:`Missing` otherwise."""
    fields = {f.name for f in dataclasses.fields(config.BenchConfig)}
    argv = ["--params", str(params), "--out", str(out), "--model", point["model"], "--width", "4" if quick else "32",
            "--image-size", "8" if quick else "32", "--channels", "3", "--num-classes", "10",
            "--batch-size", str(point["batch"]), "--warmup", "0" if quick else "3", "--repeats", "1" if quick else "10",
            "--device", str(device)]
    for knob in ("precision", "channels_last"):
        value = point[knob]
        if knob in fields:
            argv += [f"--{knob.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else value]
        elif value != TODAY[knob]:
            raise Missing(f"bench.{knob} (train.{knob}) is not a knob of this gradmix")
    if "rounds" in fields:
        argv += ["--rounds", "1" if quick else "2"]
    return argv


def bench_point(params: Path, point: dict, device: torch.device, quick: bool) -> dict:
    """One grid point through bench/bench.py: ms per step, images/s and peak memory of ERM; for GradMix
    with each attribution pass bench.py has: ms per step, GradMix/ERM and the attribution overhead."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = bench_argv(point, bench_params(params, point["model"], Path(tmp)), Path(tmp) / "bench.json",
                          device, quick)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with contextlib.redirect_stdout(io.StringIO()):
            result = bench_module().main(argv)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {**point, **bench_summary(result, point["batch"], peak)}


def bench_summary(result: dict, batch: int, peak_gib: float | None) -> dict:
    """bench.py's result in gpu-check's terms, for a bench.py with one attribution pass (``gradmix``,
    ``gradmix_random``, ``attribution_overhead``) or with both (``attribution[objective][pass]``)."""
    steps = result["step_seconds"]
    erm = steps["erm"]
    peaks = result.get("peak_memory_mb") or {}
    row = {"erm_ms": 1000 * erm, "images_per_s": batch / erm,
           "peak_gib": peak_gib, "erm_peak_gib": peaks["erm"] / 1024 if peaks.get("erm") else None, "gradmix": {}}
    if "attribution" in result:
        for objective, passes in result["attribution"].items():
            for p, v in passes.items():
                row["gradmix"][p if objective == "gt_logit" else f"{p}, {objective}"] = {
                    "ms": v["gradmix_ms"], "over_erm": v["gradmix_to_erm"], "overhead": v["overhead"]}
    else:
        row["gradmix"]["separate"] = {"ms": 1000 * steps["gradmix"], "over_erm": steps["gradmix"] / erm,
                                      "overhead": result["attribution_overhead"]}
    row["bench"] = {k: result[k] for k in ("step_seconds", "ratio_to_erm", "setup") if k in result}
    return row


# --- part 3: real epochs on a synthetic CIFAR-sized set --------------------------------------------

def register_synthetic(n_train: int, n_test: int, size: int, classes: int = 10) -> None:
    """Dataset ``synthetic_cifar``: uint8 noise images (n, 3, size, size), balanced labels, seeded."""
    @cache
    def raw() -> RawDataset:
        rng = np.random.default_rng(0)
        x_train = rng.integers(0, 256, (n_train, 3, size, size), dtype=np.uint8)
        x_test = rng.integers(0, 256, (n_test, 3, size, size), dtype=np.uint8)
        y_train, y_test = np.arange(n_train) % classes, np.arange(n_test) % classes
        return RawDataset(x_train, y_train, x_test, y_test, tuple(str(i) for i in range(classes)))

    gdata.DATASETS[SYNTHETIC] = DatasetInfo(None, 3, classes, lambda cfg: raw(),
                                            f"gpu-check: {n_train} noise images, {size} px", native_size=size)


def epoch_config(params: Path, device: torch.device, quick: bool, ckpt: Path, skipped: list) -> tuple[config.Config, list[str]]:
    """The paper_cifar10 recipe on ``synthetic_cifar`` with ResNet-18 (quick: small_cnn), 2 epochs."""
    n_train, n_test, size = (256, 64, 8) if quick else (50_000, 10_000, 32)
    register_synthetic(n_train, n_test, size)
    cfg = config.load(params, profile="paper_cifar10")
    model = "small_cnn" if quick else "resnet18"
    cfg = config.replace(
        cfg, model={"name": model, "width": 8},
        data={"dataset": SYNTHETIC, "image_size": size, "known": "all", "splits": [0], "max_train": 0,
              "mean": [0.5, 0.5, 0.5], "std": [0.29, 0.29, 0.29]},
        train={"epochs": 2, "warmup_epochs": 0, "restarts": 0, "schedule": "cosine", "seeds": [0],
               "batch_size": 32 if quick else 128, "device": str(device), "checkpoint_dir": str(ckpt),
               "progress": True, "launcher": "inline"})
    return with_methods(cfg, STAGES[model], skipped)


def time_epochs(cfg: config.Config, method: str, out: Path) -> dict:
    run = trainers.train_run(cfg, method, 0, 0, out)
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    seconds = [float(r["seconds"]) for r in rows]
    n = len(np.asarray(gdata.DATASETS[SYNTHETIC].load(cfg.data).y_train))
    second = seconds[1] - seconds[0]
    return {"first_epoch_s": seconds[0], "epoch_s": second, "images_per_s": n / second,
            "steps_per_epoch": n // cfg.train.batch_size, "train_images": n}


# --- main -----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check (default 480)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench_cuda.json"))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--device", default="cuda", help="cuda (default) | cpu: the logic on the CPU, with --quick")
    p.add_argument("--quick", action="store_true", help="tiny sizes: tests the script itself in seconds")
    args = p.parse_args(argv)
    parts = [s for s in args.parts.split(",") if s]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        p.error(f"--parts: unknown {bad}; valid: {','.join(PARTS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False): skipped, nothing measured "
              "or written. Run it on a machine with an NVIDIA GPU (`make gpu-check`).")
        return 0
    device = torch.device(args.device)
    start = time.perf_counter()
    deadline = start + args.budget
    report = Report(args.out, {"check": "gradmix gpu-check", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               "budget_s": args.budget, "quick": args.quick, "environment": environment(device)})
    report.save()
    failed = False
    for i, part in enumerate(parts):
        later = sum(SHARES[q] for q in parts[i + 1:]) * args.budget
        box = max(0.0, deadline - time.perf_counter() - later)     # its share plus what earlier parts left
        t0 = time.perf_counter()
        print(f"gpu-check: {part} (time box {box:.0f} s)", flush=True)
        if part == "tests":
            if device.type != "cuda" and not args.quick:
                report.data["tests"] = {"note": "the cuda tests need a CUDA device"}
            else:
                report.data["tests"] = run_tests(box, args.quick)
                failed = report.data["tests"].get("failed", 0) > 0
        elif part == "bench":
            report.data["bench"] = measure(bench_grid(args.quick), lambda pt: bench_point(
                Path(args.params), pt, device, args.quick), t0 + box, report, "bench")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                skipped: list[str] = []
                cfg, modes = epoch_config(Path(args.params), device, args.quick, Path(tmp) / "ckpt", skipped)
                points = [{"method": m, "precision": prec} for prec in ("fp32", "bf16")
                          for m in ("erm", *(f"gradmix_{x}" for x in modes))]

                def one(pt, cfg=cfg, tmp=tmp):
                    c = knobs(cfg, precision=pt["precision"])
                    return {**pt, **time_epochs(c, pt["method"], Path(tmp) / pt["precision"] / pt["method"] / "run")}

                report.data["epoch"] = measure(points, one, t0 + box, report, "epoch", skipped)
                report.data["epoch"]["setup"] = {"dataset": "synthetic CIFAR-sized noise, closed set", "model": cfg.model.name,
                                                 "batch_size": cfg.train.batch_size, "image_size": cfg.data.image_size,
                                                 "train": dataclasses.asdict(cfg.train)}
        report.data.setdefault(part, {})["part_seconds"] = round(time.perf_counter() - t0, 1)
        report.save()
    report.data["seconds"] = round(time.perf_counter() - start, 1)
    report.save()
    print(table(report.data), flush=True)
    print(f"gpu-check: wrote {args.out} ({report.data['seconds']:.0f} s)", flush=True)
    return 1 if failed else 0


def measure(points: list[dict], fn, until: float, report: Report, key: str, skipped=None) -> dict:
    """``fn(point)`` for each point while time is left; each row saved as soon as it is measured."""
    part = report.data[key] = {"rows": [], "skipped": list(skipped or [])}
    for pt in points:
        name = " ".join(f"{k}={v}" for k, v in pt.items())
        try:
            with time_box(until - time.perf_counter()):
                part["rows"].append(fn(pt))
        except Missing as e:
            part["skipped"].append(f"{name}: {e}")
        except Overtime as e:
            rest = points[points.index(pt):]
            part["skipped"].append(f"{len(rest)} point(s) from {name} on: time box ({e})")
            report.save()
            break
        except Exception as e:                  # one broken point must not lose the others
            part["skipped"].append(f"{name}: error {type(e).__name__}: {e}")
        report.save()
    return part


def table(r: dict) -> str:
    env = r["environment"]
    lines = [f"gpu-check on {env.get('gpu', env['device'])} (torch {env['torch']}, CUDA {env.get('cuda')})"]
    t = r.get("tests")
    if t and "cases" in t:
        lines.append(f"tests marked cuda: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped "
                     f"({t['seconds']:.0f} s)" + (f"; {t['note']}" if t.get("note") else ""))
        lines += [f"  FAILED {c['test']}: {c['message'][:160]}" for c in t["cases"] if c["outcome"] == "failed"]
    b = r.get("bench")
    if b and b.get("rows"):
        lines.append("step benchmark (bench/bench.py): ms/step; GradMix ms, x ERM, attribution overhead in ERM steps:")
        lines.append(f"  {'model':<9} {'batch':>5} {'prec':<4} {'cl':<3} {'erm':>7} {'img/s':>8} {'peak':>6}"
                     f"   {'separate':^19}   {'shared':^19}")
        for row in b["rows"]:
            def col(mode):
                g = row["gradmix"].get(mode)
                return f"{g['ms']:7.1f} {g['over_erm']:5.2f} {g['overhead']:5.2f}" if g else f"{'-':>7} {'-':>5} {'-':>5}"

            peak = f"{row['peak_gib']:5.2f}G" if row.get("peak_gib") is not None else "-"
            lines.append(f"  {row['model']:<9} {row['batch']:>5} {row['precision']:<4} "
                         f"{'on' if row['channels_last'] else 'off':<3} {row['erm_ms']:7.1f} {row['images_per_s']:8.0f} "
                         f"{peak:>6}   {col('separate')}   {col('shared')}")
    e = r.get("epoch")
    if e and e.get("rows"):
        st = e.get("setup", {})
        lines.append(f"epochs of the real trainer ({st.get('model')}, {e['rows'][0]['train_images']} images, "
                     f"{st.get('image_size')} px, batch {st.get('batch_size')}):")
        erm = {row["precision"]: row["epoch_s"] for row in e["rows"] if row["method"] == "erm"}
        for row in e["rows"]:
            ratio = f"{row['epoch_s'] / erm[row['precision']]:.2f}x ERM" if row["precision"] in erm else ""
            lines.append(f"  {row['method']:<17} {row['precision']:<4} epoch {row['epoch_s']:7.2f} s "
                         f"(first {row['first_epoch_s']:6.2f} s)  {row['images_per_s']:9.0f} img/s  {ratio}")
    for key in ("bench", "epoch"):
        part = r.get(key) or {}
        notes = [*part.get("skipped", []), *(n for row in part.get("rows", []) for n in row.get("skipped", []))]
        reasons: dict[str, list[str]] = {}
        for note in notes:                      # "model=... batch=...: reason" -> grouped by reason
            what, _, why = note.partition(": ") if "=" in note.partition(": ")[0] else ("", "", note)
            reasons.setdefault(why, []).append(what)
        for why, whats in reasons.items():
            count = f"{len(whats)} point(s), e.g. {whats[0]}: " if whats[0] else ""
            lines.append(f"  skipped ({key}): {count}{why}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
