"""Asymmetric distillation: DIST by hand, plain KD without mixing, selective smoothed relabel,
a teacher that is really loaded and stays frozen, and the config that guards it."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from gradmix import config, distill, teacher, train, trainers
from gradmix.config import ConfigError
from gradmix.losses import dist_loss
from gradmix.mixing import CutMixOptions, MixupOptions, make_mixer
from gradmix.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]


def logits(p):
    """Logits whose softmax is exactly the distribution(s) p."""
    return torch.log(torch.tensor(p, dtype=torch.float64))


@pytest.fixture(scope="module")
def smoke():
    cfg = config.load(ROOT / "params.yaml", smoke=True)
    return config.replace(cfg, data={"max_train": 96, "image_size": 12}, train={"epochs": 1, "batch_size": 32})


# --- DIST --------------------------------------------------------------------------------------

def test_dist_two_classes_by_hand():
    """With 2 classes (or 2 samples) a Pearson correlation is the sign of the product of the deviations."""
    ps = logits([[0.8, 0.2], [0.3, 0.7]])
    # same ordering everywhere -> every correlation +1 -> DIST 0 although the distributions differ
    assert dist_loss(ps, logits([[0.6, 0.4], [0.4, 0.6]])).item() == pytest.approx(0.0, abs=1e-6)
    # row 1: (0.8-0.5)(0.4-0.5) < 0 -> -1, row 2: (0.3-0.5)(0.4-0.5) > 0 -> +1: inter = 1 - 0 = 1;
    # teacher columns constant -> correlation 0 (eps): intra = 1.  DIST = β·1 + γ·1 with β=1, γ=2.
    assert dist_loss(ps, logits([[0.4, 0.6], [0.4, 0.6]]), beta=1.0, gamma=2.0).item() == pytest.approx(3.0, abs=1e-6)


def test_dist_three_classes_by_hand():
    """ρ([.5,.3,.2], [.2,.3,.5]): deviations (5,-1,-4)/30 and (-4,-1,5)/30 -> (-20+1-20)/42 = -13/14.
    One sample: its columns are constant -> intra = 1.  DIST = (1 + 13/14) + 1 = 41/14."""
    assert dist_loss(logits([[0.5, 0.3, 0.2]]), logits([[0.2, 0.3, 0.5]])).item() == pytest.approx(41 / 14, rel=1e-6)


def test_dist_temperature_and_identity():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert dist_loss(zs, zs).item() == pytest.approx(0.0, abs=1e-6)
    # softmax(2z / 2) = softmax(z): only the τ² factor remains
    assert dist_loss(2 * zs, 2 * zt, tau=2.0).item() == pytest.approx(4 * dist_loss(zs, zt).item(), rel=1e-5)
    assert dist_loss(zs, zt).item() > 0


# --- the student's loss ------------------------------------------------------------------------

@pytest.fixture
def pair():
    torch.manual_seed(0)
    student, teacher = SmallCNN(1, 4, width=4), distill.freeze(SmallCNN(1, 4, width=6))
    g = torch.Generator().manual_seed(1)
    return student, teacher, torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)


@pytest.mark.parametrize("mixer", [make_mixer("none", None), make_mixer("cutmix", CutMixOptions(prob=0.0)),
                                   make_mixer("mixup", MixupOptions(prob=0.0))])
def test_no_mixing_is_plain_kd(pair, mixer):
    student, teacher, x, y = pair
    o = distill.DistillOptions(alpha=0.7, beta=1.5, gamma=0.5)
    loss = distill.distillation_loss(student, teacher, mixer, o, x, y, 4, torch.Generator().manual_seed(0))
    zs, zt = student(x), teacher(x)
    kd = 0.7 * F.cross_entropy(zs, y) + dist_loss(zs, zt, beta=1.5, gamma=0.5)
    assert loss.item() == pytest.approx(kd.item(), rel=1e-6)


def test_mixed_batch_loss_selective_smoothed_relabel():
    """Sample 0 (classes 0 & 1): the teacher says class 2 on the mix -> relabelled with the smoothed
    two-hot; sample 1 (classes 1 & 0): the teacher says 1 -> distilled towards its raw-image output."""
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    zt_mix = torch.tensor([[0.0, 1.0, 3.0], [0.0, 2.0, 1.0]])
    y, partner, lam = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.6, 0.6])
    two_hot = torch.tensor([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0]])
    s = 0.75
    o = distill.DistillOptions(smoothing=s)
    assert distill.teacher_knows(zt_mix, y, partner).tolist() == [False, True]
    got = distill.mixed_loss(zs, zt, zt_mix, y, partner, lam, two_hot, o)
    smoothed = torch.tensor([s / 3 + (1 - s) * 0.6, s / 3 + (1 - s) * 0.4, s / 3])   # sums to 1
    relabel = -(smoothed * F.log_softmax(zs[0], 0)).sum()
    expect = dist_loss(zs[1:], zt[1:]) + relabel + 0.6 * dist_loss(zs, zt) + 0.4 * dist_loss(zs, zt[[1, 0]])
    assert got.item() == pytest.approx(expect.item(), rel=1e-6)
    # the smoothing is used: the released code's hard two-hot gives a different loss
    hard = distill.mixed_loss(zs, zt, zt_mix, y, partner, lam, two_hot, distill.DistillOptions(smoothing=0.0))
    assert hard.item() == pytest.approx((expect - relabel - (two_hot[0] * F.log_softmax(zs[0], 0)).sum()).item(),
                                        rel=1e-6)
    assert hard.item() != pytest.approx(got.item())
    # relabel off: every sample is distilled
    off = distill.mixed_loss(zs, zt, zt_mix, y, partner, lam, two_hot, distill.DistillOptions(relabel=False))
    expect_off = dist_loss(zs, zt) + 0.6 * dist_loss(zs, zt) + 0.4 * dist_loss(zs, zt[[1, 0]])
    assert off.item() == pytest.approx(expect_off.item(), rel=1e-6)


def test_mixed_batch_uses_the_teachers_raw_outputs(pair):
    student, teacher, x, y = pair
    mixer = make_mixer("cutmix", CutMixOptions(prob=1.0))
    o = distill.DistillOptions()
    loss = distill.distillation_loss(student, teacher, mixer, o, x, y, 4, torch.Generator().manual_seed(0))
    m = mixer(x, y, num_classes=4, generator=torch.Generator().manual_seed(0), model=student)
    expect = distill.mixed_loss(student(m.x), teacher(x), teacher(m.x), y, m.partner, m.lam, m.target, o)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)
    add = distill.distillation_loss(student, teacher, mixer, distill.DistillOptions(mixed="add"), x, y, 4,
                                    torch.Generator().manual_seed(0))
    assert add.item() > loss.item()      # + α·CE + DIST of the clean batch (batch statistics differ slightly)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_labels_of_any_integer_dtype(pair, dtype):
    student, teacher, x, y = pair
    for mixer in (None, make_mixer("cutmix", CutMixOptions(prob=1.0)), make_mixer("mixup", MixupOptions())):
        ref = distill.distillation_loss(student, teacher, mixer, distill.DistillOptions(), x, y, 4,
                                        torch.Generator().manual_seed(0))
        got = distill.distillation_loss(student, teacher, mixer, distill.DistillOptions(), x, y.to(dtype), 4,
                                        torch.Generator().manual_seed(0))
        assert torch.equal(got, ref)
        erm = train.training_loss(student, mixer, "replace", x, y.to(dtype), 4, torch.Generator().manual_seed(0))
        assert torch.equal(erm, train.training_loss(student, mixer, "replace", x, y, 4,
                                                    torch.Generator().manual_seed(0)))


def test_teacher_stays_frozen_while_the_student_learns(pair):
    student, teacher, x, y = pair
    before = {k: v.clone() for k, v in teacher.state_dict().items()}     # weights and BN buffers
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    s0 = [p.clone() for p in student.parameters()]
    mixer = make_mixer("cutmix", CutMixOptions(prob=0.5))
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        loss = distill.distillation_loss(student, teacher, mixer, distill.DistillOptions(), x, y, 4, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert any(not torch.equal(a, b) for a, b in zip(s0, student.parameters()))
    teacher.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        distill.distillation_loss(student, teacher, mixer, distill.DistillOptions(), x, y, 4, gen)


# --- teachers on disk -------------------------------------------------------------------------

def test_teacher_is_really_loaded_and_checked(smoke, tmp_path):
    from gradmix.data import load_openset

    cfg = config.replace(smoke, teacher={"dir": str(tmp_path / "teachers"), "width": 4})
    with pytest.raises(FileNotFoundError, match="no trained teacher"):
        teacher.check_teachers(cfg)
    (d,) = teacher.train_teachers(cfg)
    assert d == tmp_path / "teachers" / "split0-seed0"
    data = load_openset(cfg.data, 0)
    t = teacher.load_teacher(cfg, 0, 0, data, "cpu")
    saved = torch.load(d / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in t.state_dict().items())
    z = np.load(d / "scores.npz")["logits_known"]
    assert np.allclose(train.predict(t, data.x_known).numpy(), z, atol=1e-5)
    fresh = SmallCNN(1, 6, width=4)
    assert not torch.equal(fresh.fc.weight, t.fc.weight)
    # another split's known classes, or other data settings, are refused
    with pytest.raises(ValueError, match="knows classes"):
        teacher.load_teacher(cfg, 0, 0, load_openset(cfg.data, 1), "cpu")
    other = config.replace(cfg, data={"image_size": 16})
    with pytest.raises(ValueError, match="image_size"):
        teacher.load_teacher(other, 0, 0, load_openset(other.data, 0), "cpu")


def test_student_trains_end_to_end_and_fails_fast_without_teacher(smoke, tmp_path):
    cfg = config.replace(smoke, teacher={"dir": str(tmp_path / "missing")})
    with pytest.raises(FileNotFoundError, match="missing"):
        trainers.train_method(cfg, "asymkd", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    cfg = config.replace(smoke, teacher={"dir": "", "width": 4})     # teacher trained on demand
    (d,) = trainers.train_method(cfg, "asymkd", tmp_path / "runs")
    assert sorted(p.name for p in d.iterdir()) == sorted([*train.RUN_FILES, "complete.json", "dvclive"])
    assert np.isfinite(np.load(d / "scores.npz")["logits_unknown"]).all()


# --- config -----------------------------------------------------------------------------------

def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_config_guards_the_distill_kind():
    cfg = config.from_dict(raw())
    assert cfg.method("asymkd").kind == "distill" and cfg.pipeline_methods[-len(cfg.pipeline_distill):] == \
        cfg.pipeline_distill
    assert config.from_dict(cfg.to_dict()) == cfg
    r = raw()
    r["methods"]["asymkd"]["mixer"] = "gradmix"
    with pytest.raises(ConfigError, match=r"asymkd.mixer.*'gradmix'.*cutmix.*mixup.*none"):
        config.from_dict(r)
    r = raw()
    r["methods"]["asymkd"]["distill"]["mixed"] = "both"
    with pytest.raises(ConfigError, match=r"distill.mixed.*'both'.*add.*replace"):
        config.from_dict(r)
    r = raw()
    r["methods"]["asymkd"]["distill"]["smoothing"] = 1.5
    with pytest.raises(ConfigError, match="distill.smoothing"):
        config.from_dict(r)
    r = raw()
    r["methods"]["erm"]["distill"] = {"alpha": 1.0}
    with pytest.raises(ConfigError, match="only a method with kind 'distill'"):
        config.from_dict(r)
    r = raw()
    r["pipeline"]["methods"].append("asymkd")
    with pytest.raises(ConfigError, match="pipeline.methods.*'asymkd'.*pipeline.distill"):
        config.from_dict(r)
    r = raw()
    r["teacher"]["name"] = "vit"
    with pytest.raises(ConfigError, match=r"'vit'.*small_cnn"):
        config.from_dict(r)
    assert math.isclose(cfg.method("asymkd").options.prob, 0.5)


def test_benchmark_loss_times_the_real_step(smoke):
    """bench/bench.py's hook: the same loss with an untrained frozen teacher of the configured model."""
    m = smoke.method("asymkd")
    student = SmallCNN(1, 6, width=4)
    fn = teacher.benchmark_loss(smoke, m, student, make_mixer(m.mixer, m.options), 1, 6)
    frozen = fn.args[1]
    assert fn.func is distill.distillation_loss and not frozen.training
    assert frozen.fc.in_features == 4 * smoke.teacher.width
    loss = fn(torch.randn(8, 1, 8, 8), torch.arange(8) % 6, 6, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is None for p in frozen.parameters())
