"""Speed switches and their invariants (issue 10 §1-2, docs/speed.md): no host synchronisation inside a
training step of any method, bf16 trains every method, bf16 maps peak where fp32 maps do, the shared
attribution pass gives the separate pass's gradients, compact data storage, the memory check, fp16's
scaler in checkpoints, channels-last and compiled stages."""
import contextlib
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from gradmix import checkpoint, config, data, steps, teacher, train, trainers
from gradmix.attribution import attribute, class_objective, peak
from gradmix.contrastive import runs as contrastive_runs
from gradmix.contrastive.losses import supcon_loss
from gradmix.contrastive.views import make_step as contrastive_step
from gradmix.epochlog import EpochStats
from gradmix.losses import dist_loss
from gradmix.mixing import MIXERS, make_mixer
from gradmix.mixing.rmix import row_quantiles
from gradmix.models import SmallCNN, VGG32
from gradmix.precision import Precision, prepare_model

ROOT = Path(__file__).resolve().parents[1]
K, C, S, B = 4, 3, 8, 16

# --------------------------------------------------------------------------- no host synchronisation

FORBIDDEN = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__")


@contextlib.contextmanager
def no_host_reads():
    """Inside the block, every torch.Tensor method that hands a tensor's value to the host raises. On
    the CPU the training device is the host, so this forbids what a step must never do on a GPU
    (``.item()``, ``if tensor``, ``int(tensor)``, boolean-mask sizes read by Python, ...); host draws
    use NumPy and Python scalars, which stay allowed."""
    saved = {name: getattr(torch.Tensor, name) for name in FORBIDDEN}

    def forbid(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} during a training step: a host synchronisation on a GPU")
        return method

    for name in FORBIDDEN:
        setattr(torch.Tensor, name, forbid(name))
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def test_the_guard_catches_each_kind_of_read():
    t = torch.ones(3)
    for read in (lambda: t.sum().item(), lambda: t.tolist(), lambda: bool(t.any()), lambda: int(t[0]),
                 lambda: float(t[0]), lambda: t.numpy(), lambda: t.cpu(), lambda: [0, 1][t.long()[0]],
                 lambda: np.asarray(t)):
        with no_host_reads(), pytest.raises(AssertionError, match="host synchronisation"):
            read()
    with no_host_reads():
        (t * 2).sum()                              # device work stays allowed
    assert t.sum().item() == 3.0                   # and everything is restored after the block


@pytest.fixture(scope="module")
def params(cfg):
    return cfg                                    # params.yaml with its smoke overrides (conftest)


def ce_variants(params):
    """Every cross-entropy method of params.yaml, plus the options that change a step's code path."""
    out = [(name, params.method(name)) for name in params.methods]
    g = params.method("gradmix")

    def variant(base, tag, **options):
        m = params.method(base)
        return f"{base}[{tag}]", dataclasses.replace(m, options=dataclasses.replace(m.options, **options))

    for objective in ("gt_logit", "pred_logit", "ce"):
        for attribution_pass in ("separate", "shared"):
            out.append(variant("gradmix", f"{objective},{attribution_pass}", objective=objective,
                               attribution_pass=attribution_pass))
    out += [variant("gradmix", "gradcam,shared", attribution="gradcam", attribution_pass="shared"),
            variant("gradmix", "per_sample,image", per_sample=True, normalize="image"),
            variant("gradmix", "random,shared", centre="random", attribution_pass="shared"),
            variant("gradmix", "random_clipped,colocated", centre="random_clipped", fill="colocated"),
            variant("gradmix", "prob", prob=0.5),
            variant("gradmix", "eval", bn="eval"),
            variant("cutmix", "per_sample", per_sample=True, prob=1.0),
            variant("mixup", "prob", prob=0.5),
            variant("rmix", "batch", bn="batch"),
            variant("grafting", "stage,area", source="stage3", label="area"),
            variant("grafting", "train", bn="train")]
    d = params.method("asymkd")
    out += [("asymkd[add]", dataclasses.replace(d, distill=dataclasses.replace(d.distill, mixed="add"))),
            ("asymkd[no relabel]", dataclasses.replace(d, distill=dataclasses.replace(d.distill, relabel=False))),
            ("asymkd[mixup]", dataclasses.replace(d, mixer="mixup", options=MIXERS["mixup"].options()))]
    assert g.options.attribution_pass == "separate"
    return out


def ce_step(params, m, precision="fp32", seed=0):
    """The step the trainer builds for method ``m`` (gradmix.train.method_step), on a small model."""
    torch.manual_seed(seed)
    model = SmallCNN(C, K, width=4)
    prec = Precision(precision, "cpu")
    stats = EpochStats()
    mixer = stats.recording(make_mixer(m.mixer, m.options, train.host_rng(seed)))
    loss_fn = None
    if m.kind == "distill":
        cfg = dataclasses.replace(params, teacher=dataclasses.replace(params.teacher, width=4))
        loss_fn = teacher.benchmark_loss(cfg, m, model, mixer, C, K)
    return model, train.method_step(m, model, mixer, prec, loss_fn), prec, stats


def batch(seed=1, n=B):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, S, S, generator=g), torch.randint(0, K, (n,), generator=g)


def test_every_step_variant_is_covered(params):
    names = {n.split("[")[0] for n, _ in ce_variants(params)}
    assert names == set(params.methods)
    mixers = {m.mixer for _, m in ce_variants(params)}
    assert mixers == {"none", "mixup", "cutmix", "gradmix", "rmix", "grafting"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_cross_entropy_step_reads_the_device(params, precision):
    """Three steps of every method and option variant (mixing, attribution, forward, backward and the
    optimiser step) with every host read forbidden; bf16 trains each with finite losses."""
    x, y = batch()
    for name, m in ce_variants(params):
        model, step, prec, stats = ce_step(params, m, precision)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        before = [p.detach().clone() for p in model.parameters()]
        gen = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            with no_host_reads():
                loss = step(x, y, K, gen, 0.1)
                prec.step(opt)
                stats.loss(loss)
            losses.append(loss)
        assert all(torch.isfinite(v) for v in losses), name
        assert all(torch.isfinite(p).all() for p in model.parameters()), name
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), f"{name}: nothing trained"
        steps_losses, _ = stats.close()
        assert len(steps_losses) == 3 and np.isfinite(steps_losses).all(), name


def contrastive_variants(params):
    c = params.contrastive
    out = [(name, c.method(name)) for name in c.methods]
    g = c.method("supcon_gradmix")
    for objective in ("simclr", "supcon", "loss"):
        out.append((f"supcon_gradmix[{objective},shared]", dataclasses.replace(
            g, objective=objective, options=dataclasses.replace(g.options, attribution_pass="shared"))))
    out.append(("supcon_gradmix[random,shared]", dataclasses.replace(
        g, options=dataclasses.replace(g.options, attribution_pass="shared", centre="random"))))
    out.append(("supcon_gradmix[supcon_extra]", dataclasses.replace(g, supcon_extra=True)))
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_contrastive_step_reads_the_device(params, precision):
    """Every contrastive method (every extra view, both attribution passes) likewise."""
    x, y = batch()
    c = params.contrastive
    assert {m.view for _, m in contrastive_variants(params)} == {"none", "aug", "mixup", "cutmix", "gradmix"}
    for name, m in contrastive_variants(params):
        torch.manual_seed(0)
        net = contrastive_runs.ContrastiveNet(SmallCNN(C, K, width=4), 16)
        prec = Precision(precision, "cpu")
        stats = EpochStats()
        step = contrastive_step(net, m, c, prec, train.host_rng(0), stats)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            with no_host_reads():
                loss, parts = step(x, y, K, gen)
                stats.loss(loss)
                for key, v in parts.items():
                    stats.add_mean(key, v, len(y))
            opt.step()
        losses, means = stats.close()
        assert np.isfinite(losses).all() and all(np.isfinite(v) for v in means.values()), name
        assert ("extra" in means) == (m.view != "none"), name


def test_the_trainers_loops_never_read_the_device(params, tmp_path, monkeypatch):
    """The real loops of the cross-entropy trainer (GradMix shared, a distilled student in bf16) and the
    contrastive trainer, with host reads forbidden in what a batch runs of this package: per-batch
    normalisation, augmentation and the step (views, mixing, attribution, forwards, backwards). The
    optimiser step is torch's: Adam reads its step count with ``.item()`` from a tensor it keeps on the
    host (no device sync; the CUDA test below runs it under sync-debug mode)."""
    def guarded(fn):
        def wrapper(*args, **kwargs):
            with no_host_reads():
                return fn(*args, **kwargs)
        return wrapper

    def guarded_steps(factory):
        return lambda *a, **k: guarded(factory(*a, **k))

    monkeypatch.setattr(train, "method_step", guarded_steps(train.method_step))
    monkeypatch.setattr(contrastive_runs, "make_step", guarded_steps(contrastive_runs.make_step))
    monkeypatch.setattr(train, "augment", guarded(train.augment))
    monkeypatch.setattr(data.OpenSetData, "train_batch", guarded(data.OpenSetData.train_batch))
    cfg = config.replace(params, data={"max_train": 64, "image_size": 8},
                         train={"epochs": 1, "batch_size": 32, "checkpoint_dir": ""},
                         teacher={"dir": "", "width": 4}, contrastive={"train": {"epochs": 1, "batch_size": 32},
                                                                       "probe": {"epochs": 2}})
    for method, c in (("gradmix_shared", cfg), ("asymkd", config.replace(cfg, train={"precision": "bf16"})),
                      ("supcon_gradmix", cfg)):
        run = trainers.train_run(c, method, 0, 0, tmp_path / method)
        assert (run / "complete.json").is_file()
    # the contrastive loss terms, summed on the device, are epoch means per image: with weight lam,
    # λ' = 1 - the masked fraction of each image, so their epoch means add up to 1
    log = np.genfromtxt(tmp_path / "supcon_gradmix" / "log.csv", delimiter=",", names=True)
    assert abs(log["lam"] + log["masked_fraction"] - 1) < 1e-6
    assert all(np.isfinite(log[k]) and log[k] > 0 for k in ("supcon", "simclr", "extra"))


def test_contrastive_runs_record_the_speed_switches(params):
    m = params.contrastive.method("supcon_gradmix")
    base = contrastive_runs.run_identity(params, m, 0, 0, torch.device("cpu"))
    assert base["config"]["speed"] == {"precision": "fp32", "channels_last": False, "compile": False}
    for change in ({"precision": "bf16"}, {"channels_last": True}):
        other = contrastive_runs.run_identity(config.replace(params, train=change), m, 0, 0, torch.device("cpu"))
        assert other != base


@pytest.mark.cuda
def test_no_step_synchronises_on_cuda(params):
    """On a GPU: after one warm-up step, two steps of every method run under
    ``torch.cuda.set_sync_debug_mode("error")`` (fp32 and bf16; fp16 with its fused optimiser)."""
    dev = torch.device("cuda")
    x, y = (t.to(dev) for t in batch())
    for precision in ("fp32", "bf16", "fp16"):
        for name, m in ce_variants(params):
            model, _, _, _ = ce_step(params, m, precision)
            model.to(dev)
            prec = Precision(precision, dev)
            stats = EpochStats()
            mixer = stats.recording(make_mixer(m.mixer, m.options, train.host_rng(0)))
            loss_fn = None
            if m.kind == "distill":
                cfg = dataclasses.replace(params, teacher=dataclasses.replace(params.teacher, width=4))
                loss_fn = teacher.benchmark_loss(cfg, m, model, mixer, C, K, dev)
            step = train.method_step(m, model, mixer, prec, loss_fn)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=precision == "fp16")
            gen = torch.Generator(device=dev).manual_seed(0)
            for i in range(3):
                torch.cuda.set_sync_debug_mode("error" if i else "default")
                try:
                    opt.zero_grad(set_to_none=True)
                    stats.loss(step(x, y, K, gen, 0.0))
                    prec.step(opt)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            assert np.isfinite(stats.close()[0]).all(), (precision, name)
        for name, m in contrastive_variants(params):
            torch.manual_seed(0)
            net = contrastive_runs.ContrastiveNet(SmallCNN(C, K, width=4), 16).to(dev)
            prec = Precision(precision, dev)
            step = contrastive_step(net, m, params.contrastive, prec, train.host_rng(0), EpochStats())
            opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=precision == "fp16")
            gen = torch.Generator(device=dev).manual_seed(0)
            for i in range(3):
                torch.cuda.set_sync_debug_mode("error" if i else "default")
                try:
                    opt.zero_grad(set_to_none=True)
                    step(x, y, K, gen)
                    prec.step(opt)
                finally:
                    torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------- bf16 attribution

@pytest.fixture(scope="module")
def trained(params):
    """A small CNN trained 3 epochs with ERM on split 0 of the embedded digits (about 2 s)."""
    cfg = config.replace(params, data={"max_train": 0, "image_size": 16}, train={"epochs": 3, "batch_size": 64})
    d = train.load_split(cfg, 0, "cpu")
    torch.manual_seed(0)
    model = SmallCNN(1, d.num_classes, width=16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in data.batches(d.num_train, 64, gen):
            opt.zero_grad()
            F.cross_entropy(model(d.train_batch(idx)), d.y_train[idx]).backward()
            opt.step()
    return model.eval(), d


@pytest.mark.parametrize("objective, attribution", [("gt_logit", "layercam"), ("ce", "layercam"),
                                                    ("gt_logit", "gradcam")])
def test_bf16_maps_peak_where_fp32_maps_do(trained, objective, attribution):
    model, d = trained
    x, y = d.x_known, d.y_known
    args = (class_objective(objective, y), ("stage2", "stage3"), attribution, "batch", "batch")
    fp32 = attribute(model, x, *args)
    with Precision("bf16").autocast(x):
        bf16 = attribute(model, x, *args)
    assert bf16.dtype == torch.float32 and fp32.dtype == torch.float32     # maps reduced in float32
    (r32, c32), (r16, c16) = peak(fp32), peak(bf16)
    agree = ((r32 == r16) & (c32 == c16)).float().mean().item()
    assert agree >= 0.9, f"{objective}/{attribution}: bf16 peaks agree with fp32 on {agree:.0%} of the images"
    assert 0 < (fp32 - bf16).abs().max() < 0.1              # bf16 did change the arithmetic, a little


# --------------------------------------------------------------------------- the shared attribution pass

def _grads_of(params, options, model_state, x, y, use_shared):
    m = dataclasses.replace(params.method("gradmix"), options=options)
    torch.manual_seed(0)
    model = SmallCNN(C, K, width=4)
    model.load_state_dict(model_state)
    model.eval()                                          # BatchNorm with running statistics
    mixer = make_mixer("gradmix", options, train.host_rng(3))
    step = train.method_step(m, model, mixer, Precision())
    assert (step.__qualname__.startswith("shared_gradmix_step")) == use_shared
    loss = step(x, y, K, torch.Generator().manual_seed(3), 0.0)
    return loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("objective", ["gt_logit", "pred_logit", "ce"])
def test_shared_pass_gives_the_separate_gradients_with_batchnorm_in_eval_mode(params, objective):
    """With BatchNorm normalising by its running statistics, one forward of [clean; mixed] equals two
    forwards, and maps from the training forward equal maps from a separate eval-mode pass: ``.grad``
    after a shared step is exactly ∇(L_clean + L_mixed) of a separate step, to float tolerance."""
    torch.manual_seed(5)
    state = SmallCNN(C, K, width=4).state_dict()
    for k in state:                                       # non-trivial running statistics
        if k.endswith("running_mean"):
            state[k] = torch.randn_like(state[k]) * 0.1
        elif k.endswith("running_var"):
            state[k] = torch.rand_like(state[k]) + 0.5
    x, y = batch(7)
    base = params.method("gradmix").options
    sep = dataclasses.replace(base, objective=objective, bn="eval", attribution_pass="separate")
    shared = dataclasses.replace(base, objective=objective, attribution_pass="shared")
    loss_a, grads_a = _grads_of(params, sep, state, x, y, False)
    loss_b, grads_b = _grads_of(params, shared, state, x, y, True)
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max()
    assert any(g.abs().sum() > 0 for g in grads_b)


@pytest.mark.parametrize("objective, backwards, grads", [("ce", 2, 0), ("gt_logit", 2, 1), ("pred_logit", 2, 1)])
def test_shared_pass_runs_no_extra_backward_for_ce(params, monkeypatch, objective, backwards, grads):
    """objective ce reads ∂L/∂A from the clean loss's own backward (two backwards: clean, mixed; no
    autograd.grad); the logit objectives add one partial backward (autograd.grad, graph retained)."""
    calls = {"backward": 0, "grad": 0}
    backward, grad = torch.Tensor.backward, torch.autograd.grad

    def counting_backward(self, *a, **k):
        calls["backward"] += 1
        return backward(self, *a, **k)

    def counting_grad(*a, **k):
        calls["grad"] += 1
        assert k.get("retain_graph"), "the partial backward must keep the graph for the clean backward"
        return grad(*a, **k)

    monkeypatch.setattr(torch.Tensor, "backward", counting_backward)
    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    o = dataclasses.replace(params.method("gradmix").options, objective=objective, attribution_pass="shared")
    _, step, _, stats = ce_step(params, dataclasses.replace(params.method("gradmix"), options=o))
    x, y = batch()
    step(x, y, K, torch.Generator().manual_seed(0), 0.0)
    assert calls == {"backward": backwards, "grad": grads}
    _, means = stats.close()
    assert 0 < means["masked_fraction"] < 1 and means["fallback_fraction"] == 0.0


def test_shared_pass_in_train_mode_uses_the_maps_of_the_training_forward(params):
    """In train mode the shared maps are those of the model in train mode (batch statistics, as the
    clean forward computes them): the GradMix box sits on their peak."""
    o = dataclasses.replace(params.method("gradmix").options, attribution_pass="shared", lam_low=0.75, lam_span=0.0)
    m = dataclasses.replace(params.method("gradmix"), options=o)
    model, step, _, _ = ce_step(params, m)
    seen = []
    mixer = make_mixer("gradmix", o, train.host_rng(0))

    def spy(*a, **k):
        out = mixer(*a, **k)
        seen.append((k["maps"], out))
        return out

    step = steps.shared_gradmix_step(model, spy, o, Precision())
    x, y = batch()
    ref_model = SmallCNN(C, K, width=4)
    ref_model.load_state_dict(model.state_dict())
    ref_model.train()
    ref = attribute(ref_model, x, class_objective("gt_logit", y), o.stages, o.attribution, o.normalize, "batch")
    model.train()
    step(x, y, K, torch.Generator().manual_seed(0), 0.0)
    maps, mixed = seen[0]
    assert torch.allclose(maps, ref, atol=1e-5)             # small_cnn has no dropout: train = batch mode
    cy, cx = peak(maps)
    inside = mixed.mask[torch.arange(B), 0, cy, cx]
    assert inside.all()                                     # each box covers its map's peak


def test_shared_pass_combinations_are_refused_or_defined(params):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(config.ConfigError, match="attribution_pass: 'shared' reuses the clean batch's forward.*use 'replace'"):
        config.MethodConfig.from_dict("g", {"mixer": "gradmix", "use": "replace", "attribution_pass": "shared"})
    with pytest.raises(config.ConfigError, match="gradmix.bn: 'eval' needs attribution_pass: separate"):
        config.MethodConfig.from_dict("g", {"mixer": "gradmix", "use": "extra", "attribution_pass": "shared", "bn": "eval"})
    with pytest.raises(config.ConfigError, match="gradmix.attribution_pass: unknown value 'both'"):
        config.MethodConfig.from_dict("g", {"mixer": "gradmix", "use": "extra", "attribution_pass": "both"})
    from gradmix.contrastive.config import ContrastiveMethod
    with pytest.raises(config.ConfigError, match="needs attribution_pass: separate"):
        ContrastiveMethod.from_dict("c", {"view": "gradmix", "options": {"attribution_pass": "shared", "bn": "eval"}})
    assert params.method("gradmix_shared").options.attribution_pass == "shared"
    assert "gradmix_shared" in params.pipeline_methods            # trained beside gradmix by make repro
    assert raw["methods"]["gradmix_shared"] == {**raw["methods"]["gradmix"], "attribution_pass": "shared"}


# --------------------------------------------------------------------------- data storage and memory check

def test_storage_is_exact_or_named(params):
    d32 = data.load_openset(dataclasses.replace(params.data, storage="float32", max_train=0), 0)
    for storage, dtype, tol in (("auto", torch.float16, 2.5e-4), ("float16", torch.float16, 2.5e-4),
                                ("uint8", torch.uint8, 1 / 510 + 1e-6), ("float32", torch.float32, 0.0)):
        d = data.load_openset(dataclasses.replace(params.data, storage=storage, max_train=0), 0)
        assert d.pixels_train.dtype == dtype and d.storage == str(dtype).split(".")[1].replace("half", "float16")
        assert d.mean == d32.mean and d.std == d32.std      # statistics of the exact pixels
        pix = d.denormalize(d.x_known)
        err = (pix - d32.denormalize(d32.x_known)).abs().max().item()
        assert err <= tol + 1e-6, (storage, err)
    idx = torch.tensor([5, 0, 17])
    assert torch.equal(d32.train_batch(idx), d32.x_train[idx])
    # 8-bit pixels at their native size are stored exactly as uint8 by auto
    exact = [torch.randint(0, 256, (4, 3, 5, 5)).float().div_(255.0) for _ in range(2)]
    stored, kind = data.to_storage(exact, "auto")
    assert kind == "uint8" and all(torch.equal(s.float().div_(255.0), t) for s, t in zip(stored, exact))
    _, kind = data.to_storage([exact[0] + 1e-3], "auto")
    assert kind == "float16"


def test_float32_storage_normalises_exactly_as_before(params):
    """Per-batch normalisation of float32 pixels is the old whole-set normalisation, bit for bit."""
    d = data.load_openset(dataclasses.replace(params.data, storage="float32"), 0)
    pixels = d.pixels_train
    mean = torch.tensor(d.mean).view(1, -1, 1, 1)
    std = torch.tensor(d.std).view(1, -1, 1, 1)
    assert torch.equal(d.x_train, (pixels - mean) / std)


def test_a_split_that_does_not_fit_fails_before_training(params, tmp_path, monkeypatch):
    budget = data.memory_budget("cpu")
    assert budget is not None and budget[0] > 0 and "RAM available" in budget[1]
    monkeypatch.setattr(data, "memory_budget", lambda device: (10_000, "the 10 kB of a test device"))
    cfg = config.replace(params, train={"max_data_fraction": 0.5})
    with pytest.raises(config.ConfigError, match=r"data.dataset digits, split 0 \(\d+ images, 16x16, auto\): the "
                                                 r"images need about 0.0\d+ GiB on cpu, more than "
                                                 r"train.max_data_fraction 0.5 of the 10 kB of a test device"):
        train.train_run(cfg, "erm", 0, 0, tmp_path / "erm")
    assert not (tmp_path / "erm").exists()
    train.load_split(config.replace(params, train={"max_data_fraction": 0.0}), 0, "cpu")   # 0: no check


# --------------------------------------------------------------------------- no-sync rewrites match their oracles

def test_row_quantiles_equal_torch_quantile():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(9, 16, generator=g)
    values[3] = 0.5                                          # ties
    q = torch.linspace(0, 0.99, 10)[torch.randint(0, 10, (9,), generator=g)]
    q[0], q[1] = 0.0, 1.0
    assert torch.allclose(row_quantiles(values, q), torch.quantile(values, q, dim=1).diagonal(), atol=1e-7)


def test_selected_dist_equals_dist_of_the_selection():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for sel in ([1, 0, 1, 1, 0, 0, 1], [0, 1, 0, 0, 0, 0, 0], [1] * 7):
        m = torch.tensor(sel, dtype=torch.bool)
        want = dist_loss(zs[m], zt[m], 1.5, 0.5, 2.0)
        assert torch.allclose(dist_loss(zs, zt, 1.5, 0.5, 2.0, select=m), want, atol=1e-6)
    assert dist_loss(zs, zt, select=torch.zeros(7, dtype=torch.bool)).item() == 0.0


def test_supcon_mean_skips_anchors_without_positives():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(6, 4, generator=g), dim=1)
    labels = torch.tensor([0, 1, 1, 2, 2, 2])              # one view: anchor 0 has no positive
    per = supcon_loss(z, labels, views=1, reduction="none")
    assert per[0] == 0 and torch.allclose(supcon_loss(z, labels, views=1), per[1:].mean())


# --------------------------------------------------------------------------- precision, scaler, layout, compile

def test_fp16_scaler_state_is_checkpointed():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)
    prec = Precision("fp16", "cpu")
    prec.backward(model(torch.ones(1, 3)).sum() * float("inf"))     # an overflow: step skipped, scale halved
    prec.step(opt)
    parts = {"model": model, "optimizer": opt, "scheduler": torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
             "generators": {}, "host_rngs": {"mixing": np.random.default_rng(0)}, "precision": prec}
    parts["host_rngs"]["mixing"].random()
    state = checkpoint.capture_state(parts, torch.device("cpu"))
    assert state["scaler"]["scale"] == 32768.0
    fresh = dict(parts, precision=Precision("fp16", "cpu"), host_rngs={"mixing": np.random.default_rng(0)})
    checkpoint.restore_state(state, fresh, torch.device("cpu"))
    assert fresh["precision"].scaler.get_scale() == 32768.0
    assert fresh["host_rngs"]["mixing"].random() == parts["host_rngs"]["mixing"].random()
    with pytest.raises(KeyError, match="gradient scaler state missing"):
        checkpoint.restore_state(dict(state, scaler=None), fresh, torch.device("cpu"))


def test_precision_switches_train_runs_with_finite_losses(params, tmp_path):
    """bf16 and fp16 (gradient scaler, fused SGD) and channels-last through the real trainer."""
    cfg = config.replace(params, data={"max_train": 64, "image_size": 12},
                         train={"epochs": 1, "batch_size": 32, "checkpoint_dir": ""})
    for i, over in enumerate(({"precision": "bf16"}, {"precision": "fp16"}, {"channels_last": True})):
        c = config.replace(cfg, train=over)
        run = trainers.train_run(c, "gradmix", 0, 0, tmp_path / str(i))
        log = np.genfromtxt(run / "log.csv", delimiter=",", names=True)
        assert np.isfinite(log["loss"]) and 0 < log["masked_fraction"] < 1


def test_channels_last_changes_layout_not_results(params):
    m = params.method("gradmix")
    x, y = batch()
    a_model, a_step, _, _ = ce_step(params, m)
    b_model, _, _, _ = ce_step(params, m)
    prepare_model(b_model, channels_last=True)
    b_step = train.method_step(m, b_model, make_mixer("gradmix", m.options, train.host_rng(0)),
                               Precision("fp32", "cpu", channels_last=True))
    la = a_step(x, y, K, torch.Generator().manual_seed(0), 0.0)
    lb = b_step(Precision("fp32", "cpu", True).batch(x), y, K, torch.Generator().manual_seed(0), 0.0)
    assert b_model.body.stage1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(la, lb, rtol=1e-4)
    for p, q in zip(a_model.parameters(), b_model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5)


def test_compiled_stages_keep_hooks_and_state_dict_keys(params, monkeypatch):
    """Each stage's forward is compiled (here with the aot_eager backend: the real inductor backend
    needs a C++ compiler and minutes; docs/speed.md has its start-up cost); attribution hooks on the
    stages still see their activations, the state dict keeps its keys, and the shared pass's two
    backwards through one compiled graph work (AOTAutograd's donated buffers are off)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="aot_eager", **kw))
    torch.manual_seed(0)
    eager = VGG32(C, K).eval()
    compiled = VGG32(C, K).eval()
    compiled.load_state_dict(eager.state_dict())
    prepare_model(compiled, compile=True)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert all(type(compiled.stage(s).forward).__name__ != "method" for s in compiled.stages)
    x, y = batch(n=4)
    want = attribute(eager, x, class_objective("gt_logit", y), ("block2", "block3"))
    got = attribute(compiled, x, class_objective("gt_logit", y), ("block2", "block3"))
    assert torch.allclose(want, got, atol=1e-5)
    # the shared pass (partial backward with retain_graph, then the clean backward) on compiled stages
    m = dataclasses.replace(params.method("gradmix_shared"))
    plain, plain_step, _, _ = ce_step(params, m)
    model, _, _, _ = ce_step(params, m)
    prepare_model(model, compile=True)
    step = train.method_step(m, model, make_mixer("gradmix", m.options, train.host_rng(0)), Precision())
    x, y = batch()
    for s_, net in ((plain_step, plain), (step, model)):
        s_(x, y, K, torch.Generator().manual_seed(0), 0.0)
    for p, q in zip(plain.parameters(), model.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_every_stage_stays_compiled_past_dynamos_recompile_limit(monkeypatch):
    """Stages of one type share their code object, so dynamo counts every stage, mode and shape
    against one recompile limit (8), past which it silently runs a stage uncompiled. Four Sequential
    stages in three modes are twelve variants: each must reach the backend."""
    import torch._dynamo as dynamo

    graphs = []

    def counting(gm, inputs):                       # a backend that records each compiled variant
        graphs.append(gm)
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=counting, **kw))
    monkeypatch.setattr(dynamo.config, "recompile_limit", 8)
    dynamo.reset()
    model = SmallCNN(1, 3, width=4)
    prepare_model(model, compile=True)
    assert len(model.stages) >= 3
    x = torch.randn(4, 1, 16, 16)
    model.train()
    model(x).sum().backward()
    model.eval()
    model(x)
    with torch.no_grad():
        model(x)
    assert len(graphs) >= 3 * len(model.stages) > 8
    dynamo.reset()
