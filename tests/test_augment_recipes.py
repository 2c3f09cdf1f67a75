"""The paper's augmentation recipes: Vaze et al.'s RandAugment for the cross-entropy track
(gradmix.randaugment) and the GradMix authors' colour jitter / grayscale views (gradmix.colour).

Oracles: PIL (what Vaze's RandAugment runs on), kornia's functional operations, torchvision's
transforms.v2.functional (what the authors' ColorJitter runs). Determinism: same seed, same bits,
in training too, and a resumed run ends as an uninterrupted one."""
import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from gradmix import checkpoint, colour, config, trainers
from gradmix import randaugment as R
from gradmix.checks import ConfigError

from conftest import ROOT


def pil_op(op, img, v, corner=None):
    """Vaze et al.'s operation (sgvaze/osr_closed_set_all_you_need data/augmentations/randaugment.py)."""
    if op == "auto_contrast":
        return PIL.ImageOps.autocontrast(img)
    if op == "equalize":
        return PIL.ImageOps.equalize(img)
    if op == "invert":
        return PIL.ImageOps.invert(img)
    if op == "rotate":
        return img.rotate(v)
    if op == "posterize":
        return PIL.ImageOps.posterize(img, max(1, int(v)))
    if op == "solarize":
        return PIL.ImageOps.solarize(img, v)
    if op == "solarize_add":
        a = np.clip(np.array(img).astype(int) + v, 0, 255).astype(np.uint8)
        return PIL.ImageOps.solarize(PIL.Image.fromarray(a), 128)
    if op in ("color", "contrast", "brightness", "sharpness"):
        return getattr(PIL.ImageEnhance, op.capitalize())(img).enhance(v)
    if op == "shear_x":
        return img.transform(img.size, PIL.Image.AFFINE, (1, v, 0, 0, 1, 0))
    if op == "shear_y":
        return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, v, 1, 0))
    if op == "translate_x":
        return img.transform(img.size, PIL.Image.AFFINE, (1, 0, v, 0, 1, 0))
    if op == "translate_y":
        return img.transform(img.size, PIL.Image.AFFINE, (1, 0, 0, 0, 1, v))
    assert op == "cutout"
    w, h = img.size
    x0, y0 = int(max(0, corner[0] - v / 2.)), int(max(0, corner[1] - v / 2.))
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)),
                                      (125, 123, 114) if img.mode == "RGB" else 123)
    return img


BLENDS = ("color", "contrast", "brightness", "sharpness", "auto_contrast")   # PIL rounds its float LUT differently: ±1 level


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("op", list(R.RANGES))
def test_each_operation_is_vazes_pil_operation(op, channels):
    rng = np.random.default_rng(0)
    imgs = rng.integers(40, 200, (5, 32, 32, channels), dtype=np.uint8)   # a range autocontrast can stretch
    x8 = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    corners = torch.tensor(rng.uniform(0, 32, (5, 2)), dtype=torch.float32)
    for m in (6, 9, 18, 30):
        v = R.magnitude(op, m)
        for sign in ((1, -1) if op in R.SIGNED else (1,)):
            ours = R.apply_op(op, x8, sign * v, corners).permute(0, 2, 3, 1).numpy()
            pil = [PIL.Image.fromarray(i if channels == 3 else i[..., 0]) for i in imgs]
            theirs = np.stack([np.array(pil_op(op, p, sign * v, corners[k].tolist())).reshape(32, 32, channels)
                               for k, p in enumerate(pil)])
            diff = np.abs(ours.astype(int) - theirs.astype(int))
            assert diff.max() <= (1 if op in BLENDS else 0), (op, m, sign, diff.max())
            if m < 30:                              # M = 30: solarize at 256 changes nothing (as in PIL)
                assert not np.array_equal(ours, imgs) or op == "color" and channels == 1   # grey: no colour


def test_operations_agree_with_kornia():
    enhance = pytest.importorskip("kornia.enhance")
    x8 = torch.randint(0, 256, (6, 3, 32, 32), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    xf = x8.float() / 255

    def levels(t):
        return (t * 255).round()

    assert torch.equal(R.apply_op("equalize", x8, 0).float(), levels(enhance.equalize(xf)))
    assert torch.equal(R.apply_op("posterize", x8, R.magnitude("posterize", 18)).float(), levels(enhance.posterize(xf, 2)))
    assert torch.equal(R.apply_op("solarize", x8, 68.0).float(), levels(enhance.solarize(xf, 68.0 / 255)))
    assert torch.equal(R.apply_op("invert", x8, 0).float(), levels(enhance.invert(xf)))
    assert torch.equal(R.apply_op("auto_contrast", x8, 0).float(), levels(enhance.normalize_min_max(xf)))
    assert (R.apply_op("sharpness", x8, 0.58).float() - levels(enhance.sharpness(xf, 0.58))).abs().max() <= 1


def test_magnitudes_and_policies_follow_vaze():
    assert R.magnitude("solarize", 6) == pytest.approx(51.2) and R.magnitude("color", 8) == pytest.approx(0.58)
    assert R.magnitude("translate_x", 9) == pytest.approx(30.0) and R.magnitude("cutout", 15) == pytest.approx(20.0)
    assert len(R.POLICIES["standard"]) == 16 and len(R.POLICIES["digits"]) == 13
    assert not {"rotate", "translate_x", "translate_y"} & set(R.POLICIES["digits"])


def test_rand_augment_draws_per_image_and_is_seeded():
    x8 = torch.full((256, 3, 16, 16), 100, dtype=torch.uint8)
    x8[:, :, 4:12, 4:12] = 200
    a = R.rand_augment(x8, torch.Generator().manual_seed(3), 1, 9)
    b = R.rand_augment(x8, torch.Generator().manual_seed(3), 1, 9)
    c = R.rand_augment(x8, torch.Generator().manual_seed(4), 1, 9)
    assert torch.equal(a, b) and not torch.equal(a, c)
    distinct = {img.numpy().tobytes() for img in a}
    assert len(distinct) >= 12                         # one op per image, not one per batch
    # n = 0 is the identity and draws nothing; n = 2 applies two ops (differs from n = 1)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert R.rand_augment(x8, g, 0, 9) is x8 and torch.equal(g.get_state(), state)
    assert not torch.equal(R.rand_augment(x8, torch.Generator().manual_seed(3), 2, 9), a)
    with pytest.raises(ValueError, match="policy 'cifar'.*digits.*standard"):
        R.rand_augment(x8, g, 1, 9, "cifar")
    with pytest.raises(ValueError, match=r"magnitude 31.*\[0, 30\]"):
        R.rand_augment(x8, g, 1, 31)


def test_rand_augment_of_normalised_batches_keeps_dtype_and_mean_image():
    mean, std = (0.2, 0.5, 0.7), (0.25, 0.2, 0.3)
    px = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = (px - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = R.rand_augment_normalized(x, torch.Generator().manual_seed(0), 1, 9, "standard", mean, std)
    assert out.dtype == x.dtype and out.shape == x.shape
    back = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert back.min() >= -1e-6 and back.max() <= 1 + 1e-6                     # valid pixels
    assert torch.allclose(back * 255, (back * 255).round(), atol=1e-3)        # 8-bit images, as PIL's


def test_config_validates_randaugment():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.train.randaugment_n == 0                  # off in the embedded default
    with pytest.raises(ConfigError, match=r"train.randaugment_m: 31 is out of range; valid: \[0, 30\]"):
        config.replace(cfg, train={"randaugment_m": 31})
    with pytest.raises(ConfigError, match=r"train.randaugment_policy: unknown value 'mnist'.*digits.*standard"):
        config.replace(cfg, train={"randaugment_policy": "mnist"})


@pytest.mark.parametrize("name, n, m, policy", [("paper_mnist", 1, 8, "digits"), ("paper_svhn", 1, 18, "digits"),
                                                ("paper_cifar10", 1, 6, "standard"),
                                                ("paper_tinyimagenet", 1, 9, "standard")])
def test_paper_profiles_use_vazes_randaugment_and_the_authors_views(name, n, m, policy):
    cfg = config.load(ROOT / "params.yaml", profile=name)
    t, v = cfg.train, cfg.contrastive.views
    assert (t.randaugment_n, t.randaugment_m, t.randaugment_policy) == (n, m, policy)
    if name == "paper_mnist":                            # the authors' MNIST views only rotate
        assert not v.colour
    else:
        assert (v.jitter_prob, v.jitter_brightness, v.jitter_contrast, v.jitter_saturation, v.jitter_hue,
                v.grayscale_prob) == (0.8, 0.4, 0.4, 0.4, 0.1, 0.2)


# -- colour jitter and grayscale ---------------------------------------------------------------------

def test_grayscale_gives_equal_channels_and_the_luma():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = colour.random_grayscale(x, torch.Generator().manual_seed(0), 1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.allclose(out[:, :1], TF.rgb_to_grayscale(x), atol=1e-6)
    half = colour.random_grayscale(x, torch.Generator().manual_seed(0), 0.5)
    grey = (half[:, 0] == half[:, 1]).flatten(1).all(1)
    assert 16 < int(grey.sum()) < 48 and torch.equal(half[~grey], x[~grey])
    one = torch.rand(4, 1, 8, 8)
    assert torch.equal(colour.random_grayscale(one, torch.Generator(), 1.0), one)


@pytest.mark.parametrize("op, tv", [(colour.adjust_brightness, TF.adjust_brightness),
                                    (colour.adjust_contrast, TF.adjust_contrast),
                                    (colour.adjust_saturation, TF.adjust_saturation),
                                    (colour.adjust_hue, TF.adjust_hue)])
def test_each_colour_operation_is_torchvisions(op, tv):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 12, 12, generator=g)
    f = (torch.rand(8, generator=g) - 0.5) if op is colour.adjust_hue else torch.rand(8, generator=g) * 1.6
    theirs = torch.stack([tv(x[i], f[i].item()) for i in range(8)])
    assert torch.allclose(op(x, f), theirs, atol=1e-5)


def test_color_jitter_is_torchvisions_color_jitter_per_image():
    """Replaying the generator's draws (apply, four factors, order) through torchvision's functional
    operations image by image gives the batch result."""
    x = torch.rand(32, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    out = colour.color_jitter(x, torch.Generator().manual_seed(5), 0.8, 0.4, 0.3, 0.2, 0.1)
    g = torch.Generator().manual_seed(5)
    apply = torch.rand(32, generator=g) < 0.8
    b, c, s = (lo + (hi - lo) * torch.rand(32, generator=g) for lo, hi in ((0.6, 1.4), (0.7, 1.3), (0.8, 1.2)))
    h = -0.1 + 0.2 * torch.rand(32, generator=g)
    order = torch.rand(32, 4, generator=g).argsort(1)
    fns = [lambda i, t: TF.adjust_brightness(t, b[i].item()), lambda i, t: TF.adjust_contrast(t, c[i].item()),
           lambda i, t: TF.adjust_saturation(t, s[i].item()), lambda i, t: TF.adjust_hue(t, h[i].item())]
    for i in range(32):
        t = x[i]
        if apply[i]:
            for k in order[i].tolist():
                t = fns[k](i, t)
        assert torch.allclose(out[i], t, atol=1e-5), i
    assert 0 < int((~apply).sum()) and torch.equal(out[~apply], x[~apply])


def test_color_jitter_ranges_are_respected():
    grey = torch.full((2000, 3, 2, 2), 0.5)
    only_brightness = colour.color_jitter(grey, torch.Generator().manual_seed(0), 1.0, 0.4, 0.0, 0.0, 0.0)
    f = only_brightness[:, 0, 0, 0] / 0.5
    assert f.min() >= 0.6 - 1e-6 and f.max() <= 1.4 + 1e-6 and f.min() < 0.62 and f.max() > 1.38
    red = torch.zeros(2000, 3, 2, 2)
    red[:, 0] = 1.0
    hued = colour.color_jitter(red, torch.Generator().manual_seed(0), 1.0, 0.0, 0.0, 0.0, 0.1)
    turns = (hued[:, 1, 0, 0] - hued[:, 2, 0, 0]) / 6        # HSV hue of pure red turned by |f| < 1/6 turn
    assert torch.all(hued[:, 0] == 1)
    assert turns.abs().max() <= 0.1 + 1e-4 and turns.abs().max() > 0.09
    sat = colour.color_jitter(red, torch.Generator().manual_seed(0), 1.0, 0.0, 0.0, 0.4, 0.0)
    red_minus_grey = sat[:, 0, 0, 0] - colour.luma(sat)[:, 0, 0, 0]
    ratio = red_minus_grey / (1 - colour.LUMA[0])            # the saturation factor (before clamping)
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.0 + 1e-5     # red clamps at 1 above factor 1
    with pytest.raises(ValueError, match="hue <= 0.5"):
        colour.color_jitter(red, torch.Generator(), 0.5, hue=0.7)


def test_color_ops_are_seeded_and_off_draws_nothing():
    x = torch.rand(16, 3, 8, 8)
    a = colour.color_jitter(x, torch.Generator().manual_seed(2), 0.8)
    assert torch.equal(a, colour.color_jitter(x, torch.Generator().manual_seed(2), 0.8))
    assert not torch.equal(a, colour.color_jitter(x, torch.Generator().manual_seed(3), 0.8))
    g = torch.Generator().manual_seed(2)
    state = g.get_state()
    assert colour.color_jitter(x, g, 0.0) is x and colour.random_grayscale(x, g, 0.0) is x
    assert torch.equal(g.get_state(), state)


def test_views_apply_colour_on_pixels_and_need_the_normalisation():
    from gradmix.contrastive import views
    from gradmix.contrastive.config import ViewConfig

    cfg = ViewConfig(crop_padding=0, rotation=0.0, scale=0.0, brightness=0.0, contrast=0.0, grayscale_prob=1.0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    px = torch.rand(4, 3, 8, 8)
    x = (px - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = views.view(x, torch.Generator().manual_seed(0), cfg, (mean, std))
    back = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(back[:, 0], back[:, 1], atol=1e-6) and torch.allclose(back[:, :1], colour.luma(px), atol=1e-6)
    with pytest.raises(ValueError, match="need the data's mean and std"):
        views.view(x, torch.Generator(), cfg)
    with pytest.raises(ConfigError, match=r"contrastive.views.grayscale_prob: 1.5 is out of range"):
        ViewConfig(grayscale_prob=1.5)


# -- training: same seed, same bits; a resumed run ends as an uninterrupted one ------------------------

@pytest.fixture(scope="module")
def recipes():
    """Tiny runs with the recipes on: RandAugment (digits list) for CE, colour views for contrastive."""
    smoke = config.load(ROOT / "params.yaml", smoke=True)
    return config.replace(smoke, data={"max_train": 64, "image_size": 12},
                          train={"epochs": 2, "batch_size": 32, "randaugment_n": 2, "randaugment_m": 12,
                                 "randaugment_policy": "digits", "checkpoint_dir": ""},
                          contrastive={"train": {"epochs": 2, "batch_size": 32}, "probe": {"epochs": 3},
                                       "views": {"jitter_prob": 0.8, "grayscale_prob": 0.2}})


class Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["gradmix", "supcon_gradmix"])
def test_recipes_rerun_and_resume_bit_identical(recipes, tmp_path, method):
    a = trainers.train_run(recipes, method, 0, 0, tmp_path / "a" / method / "split0-seed0")
    b = trainers.train_run(recipes, method, 0, 0, tmp_path / "b" / method / "split0-seed0")
    assert (a / "scores.npz").read_bytes() == (b / "scores.npz").read_bytes()
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    save = checkpoint.RunWriter.save

    def stop(self, epoch, parts):
        save(self, epoch, parts)
        raise Stop

    out = tmp_path / "c" / method / "split0-seed0"
    checkpoint.RunWriter.save = stop
    try:
        with pytest.raises(Stop):
            trainers.train_run(recipes, method, 0, 0, out)
    finally:
        checkpoint.RunWriter.save = save
    trainers.train_run(recipes, method, 0, 0, out)            # resumes from epoch 1
    assert (out / "scores.npz").read_bytes() == (a / "scores.npz").read_bytes()
    # and the recipe changes the run: without it the numbers differ
    off = config.replace(recipes, train={"randaugment_n": 0}, contrastive={"views": {"jitter_prob": 0.0,
                                                                                    "grayscale_prob": 0.0}})
    d = trainers.train_run(off, method, 0, 0, tmp_path / "d" / method / "split0-seed0")
    assert (d / "scores.npz").read_bytes() != (a / "scores.npz").read_bytes()


def test_crop_pads_with_the_mean_colour():
    """data.augment pads normalised images with zeros: de-normalised, the padding is data.mean."""
    from gradmix import data

    cfg = config.replace(config.load(ROOT / "params.yaml", smoke=True), data={"max_train": 32})
    split = data.load_openset(cfg.data, 0)
    x = split.x_train[:64]
    out = data.augment(x, torch.Generator().manual_seed(0), crop_padding=3)
    pixels = split.denormalize(out)
    shifted = [i for i in range(len(x)) if not torch.equal(out[i], x[i])]
    assert shifted
    border = torch.zeros_like(out, dtype=torch.bool)
    for i in shifted:       # a pixel is padding where the shifted image ran out of source rows/columns
        border[i] = out[i] == 0
    assert torch.allclose(pixels[border], torch.tensor(split.mean[0]), atol=1e-6)
    assert abs(split.mean[0] - float(split.denormalize(split.x_train).mean())) < 1e-5    # the images' mean
