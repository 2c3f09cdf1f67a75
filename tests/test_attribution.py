"""Attribution equals CAM's closed form on a GAP + linear head, and leaves the model untouched."""
import pytest
import torch
from torch import nn

from gradmix.attribution import attribute, attribution_mode, class_objective, normalize_map, stage_maps
from gradmix.mixing import GradMixOptions, gradmix
from gradmix.models import ResNet18, SmallCNN, VGG32


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = SmallCNN(1, 4, width=6)
    x = torch.randn(5, 1, 12, 12)
    y = torch.tensor([0, 1, 2, 3, 1])
    model.train()
    model(x)        # give BN non-trivial running statistics
    return model, x, y


def last_activations(model, x):
    with torch.no_grad():
        model.eval()
        a = model.body(x)
        model.train()
    return a


def test_gradcam_equals_cam_closed_form(setup):
    model, x, y = setup
    a = last_activations(model, x)                    # (N, K', h, w)
    w = model.fc.weight[y]                            # (N, K')
    cam = torch.einsum("nkhw,nk->nhw", a, w).clamp_min(0) / (a.shape[2] * a.shape[3])
    maps = stage_maps(model, x, class_objective("gt_logit", y), ["stage3"], "gradcam", bn="eval")
    assert torch.allclose(maps["stage3"], cam, atol=1e-6)
    assert cam.abs().sum() > 0


def test_layercam_equals_closed_form(setup):
    model, x, y = setup
    a = last_activations(model, x)
    w = model.fc.weight[y].clamp_min(0)
    expect = torch.einsum("nkhw,nk->nhw", a, w) / (a.shape[2] * a.shape[3])
    maps = stage_maps(model, x, class_objective("gt_logit", y), ["stage3"], "layercam", bn="eval")
    assert torch.allclose(maps["stage3"], expect, atol=1e-6)


def test_predicted_logit_objective_uses_the_argmax_class(setup):
    model, x, y = setup
    with torch.no_grad():
        model.eval()
        pred = model(x).argmax(1)
        model.train()
    a = stage_maps(model, x, class_objective("pred_logit"), ["stage3"], "gradcam", bn="eval")
    b = stage_maps(model, x, class_objective("gt_logit", pred), ["stage3"], "gradcam", bn="eval")
    assert torch.allclose(a["stage3"], b["stage3"])


@pytest.mark.parametrize("bn", ["batch", "eval"])
def test_no_parameter_grad_no_bn_update_mode_restored(setup, bn):
    model, x, y = setup
    params = list(model.parameters())
    for i, p in enumerate(params):       # half with existing grads, half without
        p.grad = torch.full_like(p, 0.5) if i % 2 else None
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    attribute(model, x, class_objective("ce", y), ["stage2", "stage3"], bn=bn)
    gradmix(x, y, num_classes=4, generator=torch.Generator().manual_seed(0),
            options=GradMixOptions(stages=("stage2", "stage3"), bn=bn), model=model)
    for i, p in enumerate(params):
        if i % 2:
            assert torch.equal(p.grad, torch.full_like(p, 0.5))
        else:
            assert p.grad is None
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), f"buffer {k} changed"
    assert model.training and all(m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_attribution_mode_turns_dropout_off_and_restores_eval_models():
    model = VGG32(1, 3)
    model.eval()
    with attribution_mode(model, "batch"):
        assert not any(m.training for m in model.modules() if isinstance(m, nn.Dropout2d))
        assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(m.training for m in model.modules())


def test_batch_mode_matches_the_training_forward(setup):
    """bn='batch' normalises with batch statistics, as the training forward does."""
    model, x, y = setup
    acts = {}
    h = model.stage("stage3").register_forward_hook(lambda m, i, o: acts.__setitem__("a", o.detach()))
    model(x)
    h.remove()
    maps = stage_maps(model, x, class_objective("gt_logit", y), ["stage3"], "gradcam", bn="batch")
    w = model.fc.weight[y]
    cam = torch.einsum("nkhw,nk->nhw", acts["a"], w).clamp_min(0) / acts["a"][0, 0].numel()
    assert torch.allclose(maps["stage3"], cam, atol=1e-6)


def test_normalisation_and_multi_stage_sum(setup):
    model, x, y = setup
    m = torch.rand(3, 4, 4) * torch.tensor([1.0, 5.0, 10.0]).view(3, 1, 1)
    per_image = normalize_map(m, "image")
    assert torch.allclose(per_image.amax((1, 2)), torch.ones(3), atol=1e-6)
    assert torch.allclose(per_image.amin((1, 2)), torch.zeros(3))
    batch = normalize_map(m, "batch")
    assert batch.max() == pytest.approx(1.0, abs=1e-6) and batch.min() == 0
    out = attribute(model, x, class_objective("gt_logit", y), ["stage1", "stage2", "stage3"])
    assert out.shape == (5, 12, 12) and out.max() <= 3 + 1e-5 and out.min() >= 0


def test_stages_of_every_model_can_be_hooked():
    x = torch.randn(2, 3, 16, 16)
    y = torch.tensor([0, 1])
    for model in (ResNet18(3, 2), VGG32(3, 2), SmallCNN(3, 2, 4)):
        out = attribute(model, x, class_objective("gt_logit", y), model.stages[-2:])
        assert out.shape == (2, 16, 16) and torch.isfinite(out).all()
