"""On CUDA: every mixer and the attribution pass agree with the CPU, every method trains a step, and the
same seed gives the same scores under deterministic algorithms (and which ops need
CUBLAS_WORKSPACE_CONFIG for that).

Marked ``cuda``: skipped without a CUDA device (tests/conftest.py); ``make gpu-check`` runs them
(bench/gpu_check.py). Lines printed as ``gpu-check: ...`` land in results/bench_cuda.json.
Comparisons with the CPU turn TF32 off (cuDNN convolutions use it by default on Ampere and newer,
which alone moves results by ~1e-3); training keeps the defaults.
"""
import copy
import csv
import dataclasses
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradmix import config, trainers
from gradmix.attribution import attribute, class_objective, peak
from gradmix.config import ModelConfig
from gradmix.mixing import MIXERS, GradMixOptions, make_mixer
from gradmix.models import build_model

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]
SMOKE = config.load(ROOT / "params.yaml", smoke=True)
K = 6
CUDA = torch.device("cuda")


@pytest.fixture
def no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def with_train(cfg, **train):
    """``cfg`` with speed knobs of ``train`` (e.g. precision="bf16"); skips the test where this gradmix
    has no such knob yet (only fp32 exists before the speed switches)."""
    have = {f.name for f in dataclasses.fields(config.TrainConfig)}
    missing = [k for k, v in train.items() if k not in have and (k, v) != ("precision", "fp32")]
    if missing:
        pytest.skip(f"train.{missing[0]} is not a knob of this gradmix")
    return config.replace(cfg, train={k: v for k, v in train.items() if k in have})


def batch(n=16, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, K, (n,), generator=g)


# --- CPU and CUDA agree ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", [m for m in SMOKE.methods if SMOKE.methods[m].mixer != "none"])
def test_mixer_agrees_on_cpu_and_cuda(name, no_tf32):
    """The same images, model weights and random draws (a CPU generator, which every mixer accepts for
    data on any device, and the host generator of per-batch scalars where the mixer takes one) give the
    same mixed batch on CUDA. An attribution-guided mixer may put a box one
    pixel off where two map values tie to float precision: at least 90 % of the images agree exactly."""
    m = SMOKE.method(name)
    torch.manual_seed(0)
    model = build_model(SMOKE.model, 3, K).train()
    x, y = batch()
    mix = make_mixer(m.mixer, m.options)
    host = {}                # the trainers' host generator of per-batch scalars, where mixers take one
    if "rng" in inspect.signature(MIXERS[m.mixer].fn).parameters:
        host = {"rng": lambda: np.random.default_rng(3)}
    ref = mix(x, y, num_classes=K, generator=torch.Generator().manual_seed(2), model=copy.deepcopy(model),
              **{k: f() for k, f in host.items()})
    out = mix(x.to(CUDA), y.to(CUDA), num_classes=K, generator=torch.Generator().manual_seed(2),
              model=copy.deepcopy(model).to(CUDA), **{k: f() for k, f in host.items()})
    assert out.x.device.type == "cuda" and out.x.dtype == x.dtype
    same = (torch.isclose(out.x.cpu(), ref.x, atol=1e-4).flatten(1).all(1)
            & torch.isclose(out.target.cpu(), ref.target, atol=1e-5).all(1)
            & torch.isclose(out.lam.cpu(), ref.lam, atol=1e-5))
    if MIXERS[m.mixer].needs_model:
        assert same.float().mean() >= 0.9, f"{name}: {int(same.sum())} of {len(same)} images agree"
    else:
        assert same.all(), f"{name}: images {torch.flatnonzero(~same).tolist()} differ"
    assert torch.isclose(out.weight.cpu()[same], ref.weight[same], atol=1e-5).all()


@pytest.mark.parametrize("model_name, stages", [("small_cnn", ("stage2", "stage3")), ("resnet18", ("layer3", "layer4"))])
@pytest.mark.parametrize("method", ["layercam", "gradcam"])
def test_attribution_agrees_on_cpu_and_cuda(model_name, stages, method, no_tf32):
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_name, 8), 3, K).train()
    x, y = batch(n=8, size=32)
    ref = attribute(copy.deepcopy(model), x, class_objective("gt_logit", y), stages, method, "batch", "batch")
    out = attribute(copy.deepcopy(model).to(CUDA), x.to(CUDA), class_objective("gt_logit", y.to(CUDA)), stages,
                    method, "batch", "batch")
    assert out.shape == ref.shape == (8, 32, 32) and out.device.type == "cuda"
    assert torch.allclose(out.cpu(), ref, atol=1e-4, rtol=1e-3), (out.cpu() - ref).abs().max()
    agree = (torch.stack(peak(out.cpu()), 1) == torch.stack(peak(ref), 1)).all(1)     # (N,) same peak pixel
    assert int(agree.sum()) >= 7, agree


# --- every method trains on CUDA ------------------------------------------------------------------

ALL_METHODS = list(SMOKE.methods) + list(SMOKE.contrastive.methods)


def one_step(cfg):
    """64 training images in one batch: one optimiser step per epoch."""
    return config.replace(cfg, data={"max_train": 64}, train={"batch_size": 64, "epochs": 1, "device": "cuda"},
                          contrastive={"train": {"batch_size": 64, "epochs": 1}, "probe": {"epochs": 5}})


def check_run(run: Path) -> None:
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"])), rows
    scores = np.load(run / "scores.npz")
    for key in ("logits_known", "score_knn_known"):
        if key in scores:
            assert len(scores[key]) and np.isfinite(scores[key]).all(), key
    assert json.loads((run / "config.json").read_text())["run"]["device"].startswith("cuda")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ALL_METHODS)
def test_one_training_step_of_every_method(method, precision, tmp_path):
    cfg = with_train(one_step(SMOKE), precision=precision)
    check_run(trainers.train_run(cfg, method, 0, 0, tmp_path / method / "split0-seed0"))


@pytest.mark.parametrize("name", ["gradmix", "gradmix_partner"])
def test_shared_attribution_pass_step(name, tmp_path):
    if "attribution_pass" not in {f.name for f in dataclasses.fields(GradMixOptions)}:
        pytest.skip("methods.gradmix.attribution_pass is not an option of this gradmix")
    m = SMOKE.method(name)
    methods = {**SMOKE.methods, name: config.MethodConfig.from_dict(name, {**m.to_dict(), "attribution_pass": "shared"})}
    cfg = one_step(dataclasses.replace(SMOKE, methods=methods))
    check_run(trainers.train_run(cfg, name, 0, 0, tmp_path / name / "split0-seed0"))


# --- determinism ----------------------------------------------------------------------------------

DETERMINISTIC = """
import json, sys, warnings
import torch
torch.use_deterministic_algorithms(True, warn_only=True)
from gradmix import config, trainers
cfg = config.replace(config.load(sys.argv[1], smoke=True), data={"max_train": 192},
                     train={"epochs": 2, "device": "cuda", "checkpoint_dir": ""}, contrastive={"train": {"epochs": 2}})
flagged = set()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for m in sys.argv[3:]:
        trainers.train_run(cfg, m, 0, 0, f"{sys.argv[2]}/{m}/split0-seed0")
for w in caught:
    text = str(w.message)
    if "deterministic" in text:
        flagged.add(text.split(" does not have a deterministic")[0].strip()[:120])
print("FLAGGED " + json.dumps(sorted(flagged)))
"""
DETERMINISTIC_METHODS = ["erm", "mixup", "cutmix", "gradmix", "rmix", "grafting", "asymkd", "supcon_gradmix"]


def cuda_python(script: str, *args: str, cublas: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), **({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"} if cublas else {}))
    r = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_same_seed_same_scores_with_deterministic_algorithms(tmp_path):
    """Two processes train the same runs with torch.use_deterministic_algorithms(True) and
    CUBLAS_WORKSPACE_CONFIG=:4096:8: identical scores.npz and weights. Ops torch flags as
    non-deterministic (warn_only) are reported."""
    flagged = set()
    for out in ("a", "b"):
        text = cuda_python(DETERMINISTIC, str(ROOT / "params.yaml"), str(tmp_path / out), *DETERMINISTIC_METHODS)
        flagged |= set(json.loads(text.rsplit("FLAGGED ", 1)[1]))
    print(f"gpu-check: ops torch flags as non-deterministic during training: {sorted(flagged) or 'none'}")
    differ = [m for m in DETERMINISTIC_METHODS
              for f in ("scores.npz", "model.pt")
              if (tmp_path / "a" / m / "split0-seed0" / f).read_bytes() != (tmp_path / "b" / m / "split0-seed0" / f).read_bytes()]
    assert not differ, f"{differ} differ between two runs; ops flagged as non-deterministic: {sorted(flagged)}"


PROBE = """
import json
import torch
import torch.nn.functional as F
torch.use_deterministic_algorithms(True)
x = torch.randn(8, 16, device="cuda", requires_grad=True)
w = torch.randn(4, 16, device="cuda", requires_grad=True)
img = torch.randn(2, 3, 16, 16, device="cuda", requires_grad=True)
k = torch.randn(5, 3, 3, 3, device="cuda", requires_grad=True)
ops = {
    "F.linear (nn.Linear: classifier heads, projection heads)": lambda: F.linear(x, w),
    "torch.mm / @ (contrastive similarities, kNN)": lambda: x @ x.T,
    "torch.bmm": lambda: torch.bmm(x[None], w.T[None]),
    "F.linear backward": lambda: F.linear(x, w).sum().backward(),
    "F.conv2d forward and backward (cuDNN)": lambda: F.conv2d(img, k, padding=1).sum().backward(),
}
out = {}
for name, fn in ops.items():
    try:
        fn()
        torch.cuda.synchronize()
        out[name] = "ok"
    except RuntimeError as e:
        out[name] = "needs CUBLAS_WORKSPACE_CONFIG" if "CUBLAS_WORKSPACE_CONFIG" in str(e) else str(e)[:200]
print("PROBE " + json.dumps(out))
"""


def test_which_ops_need_the_cublas_workspace_config():
    """Under torch.use_deterministic_algorithms(True) without CUBLAS_WORKSPACE_CONFIG, every cuBLAS matrix
    product raises (PyTorch's reproducibility notes: CUDA >= 10.2); cuDNN convolutions do not."""
    out = json.loads(cuda_python(PROBE, cublas=False).rsplit("PROBE ", 1)[1])
    need = [name for name, v in out.items() if v == "needs CUBLAS_WORKSPACE_CONFIG"]
    print(f"gpu-check: ops that need CUBLAS_WORKSPACE_CONFIG=:4096:8 under deterministic algorithms: {need}")
    print(f"gpu-check: probe results: {out}")
    assert "F.linear (nn.Linear: classifier heads, projection heads)" in need
    assert out["F.conv2d forward and backward (cuDNN)"] == "ok"

