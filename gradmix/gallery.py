"""Image figures: dataset examples, GradMix attribution galleries, R-Mix / Saliency Grafting samples,
and the interactive explorer of ``notebooks/explore.ipynb``.

Attribution maps are drawn with a perceptually uniform colormap (:data:`MAP_CMAP`) on a fixed
[0, 1] scale with a colourbar: each stage map is min-max normalised (over the batch or per image,
the options' ``normalize``, as GradMix computes it) and the combined map is the mean of the
upsampled normalised stage maps (GradMix sums them; the mean has the same peak and stays in [0, 1]).
A gallery of a smoke model (see :func:`training_budget`) says so in its title.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .evaluate import find_runs, read_run, run_config

MAP_CMAP = "viridis"
MAP_LABEL = "normalised attribution [0, 1]"
BOX_COLOUR = "#ff2d55"


def display_images(data, x) -> np.ndarray:
    """Normalised images (N, C, H, W) of ``data`` (:class:`~gradmix.data.OpenSetData`) -> [0, 1]
    arrays (N, H, W) for one channel, (N, H, W, 3) for three."""
    t = data.denormalize(x).clamp(0, 1).cpu()
    return t[:, 0].numpy() if t.shape[1] == 1 else t.permute(0, 2, 3, 1).numpy()


def _image(ax, img):
    ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)


def _bare(ax):
    ax.set_xticks([])
    ax.set_yticks([])


def split_figure(data, per_row: int = 12):
    """Example test images of one open-set split: a row of known-class images, a row of unknown ones."""
    rows = {"known": (display_images(data, data.x_known[:per_row]), data.y_known[:per_row].tolist(), data.known),
            "unknown": (display_images(data, data.x_unknown[:per_row]), data.y_unknown[:per_row].tolist(), None)}
    fig, axes = plt.subplots(2, per_row, figsize=(1.0 * per_row, 2.5), squeeze=False)
    for r, (name, (imgs, labels, lut)) in enumerate(rows.items()):
        for j, ax in enumerate(axes[r]):
            ax.axis("off")
            if j < len(imgs):
                _image(ax, imgs[j])
                ax.set_title(str(lut[labels[j]] if lut else labels[j]), fontsize=7)
        axes[r][0].text(-0.3, 0.5, name, transform=axes[r][0].transAxes, ha="right", va="center")
    fig.suptitle(f"known classes {data.known}", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# what a run was trained with


def training_budget(run_dir, reference=None) -> dict:
    """How long a run trained, and whether it is a smoke model, from its ``config.json``.

    Returns ``{"epochs", "max_train", "smoke", "why"}``. A run is a smoke model when

    * its config already holds its params' ``smoke`` overrides for the training budget (the keys
      ``train.epochs`` or, for the contrastive track, ``contrastive.train.epochs``, and
      ``data.max_train``, those the ``smoke`` section sets): it was trained with ``smoke=True``; or
    * ``reference`` (a :class:`~gradmix.config.Config`, e.g. the pipeline's params.yaml without
      smoke) trains longer (more epochs) or on more images (``max_train`` 0 = all, or larger).

    ``why`` says which, e.g. ``"1 epoch (pipeline: 15), 192 training images"``; "" when not smoke.
    """
    raw, _ = read_run(run_dir)
    contrastive = raw["run"].get("track") == "contrastive"
    epochs = raw["contrastive"]["train"]["epochs"] if contrastive else raw["train"]["epochs"]
    max_train = raw["data"]["max_train"]
    smoke = raw.get("smoke") or {}
    smoke_epochs = ((smoke.get("contrastive") or {}).get("train") or {}).get("epochs") if contrastive \
        else (smoke.get("train") or {}).get("epochs")
    checks = [(smoke_epochs, epochs), ((smoke.get("data") or {}).get("max_train"), max_train)]
    checks = [(want, have) for want, have in checks if want is not None]
    is_smoke = bool(checks) and all(want == have for want, have in checks)
    ref_epochs = ref_max = None
    if reference is not None:
        ref_epochs = reference.contrastive.train.epochs if contrastive and reference.contrastive else reference.train.epochs
        ref_max = reference.data.max_train
        is_smoke |= epochs < ref_epochs or (max_train > 0 and (ref_max == 0 or max_train < ref_max))
    why = ""
    if is_smoke:
        why = f"{epochs} epoch{'s' * (epochs != 1)}" + (f" (pipeline: {ref_epochs})" if ref_epochs not in (None, epochs) else "")
        if max_train:
            why += f"; {max_train} training images" + (" (pipeline: all)" if ref_max == 0 else "")
    return {"epochs": epochs, "max_train": max_train, "smoke": is_smoke, "why": why}


# ---------------------------------------------------------------------------------------------
# GradMix galleries


def one_per_class(labels, n: int):
    """Indices of ``n`` images, classes taking turns: the first image of each class (in class order),
    then the second of each, ...; ``labels`` (N,) int tensor. Fewer than ``n`` if N < n."""
    import torch

    labels = torch.as_tensor(labels).cpu()
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    key = rank * (int(labels.max()) + 1) + labels                   # (rank, class), lexicographic
    return torch.argsort(key, stable=True)[:n]


def gallery_figure(images: np.ndarray, stage_maps: dict, combined: np.ndarray, boxes, mixed: np.ndarray,
                   row_labels=None, title: str | None = None, note: str | None = None, mixed_labels=None):
    """Rows = images; columns = image, each stage's map, the combined map with the box, the mixed image.

    images, mixed: (N, H, W) or (N, H, W, 3) in [0, 1]; stage_maps: {stage: (N, h, w)} and
    combined: (N, H, W), all in [0, 1] (drawn with :data:`MAP_CMAP` on a fixed [0, 1] scale, one
    colourbar); boxes: (y1, y2, x1, x2), each of length N, the box [y1, y2) × [x1, x2) outlined on
    the image and the combined map. ``row_labels``: one string per row (left of the row);
    ``mixed_labels``: one string per row under the mixed image (e.g. its soft label);
    ``title``: the figure title; ``note``: a caption line under the figure. Raises ValueError
    for a map outside [0, 1].
    """
    for name, m in [*stage_maps.items(), ("combined", combined)]:
        if np.nanmin(m) < -1e-6 or np.nanmax(m) > 1 + 1e-6:
            raise ValueError(f"gallery_figure: map {name!r} spans [{np.nanmin(m):.3g}, {np.nanmax(m):.3g}], "
                             f"expected normalised values in [0, 1]")
    n, cols = len(images), 3 + len(stage_maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.3 * cols + 1.9, 1.3 * n + 0.9), squeeze=False, layout="constrained")
    y1, y2, x1, x2 = (np.asarray(b) for b in boxes)
    im = None
    for i, row in enumerate(axes):
        box = dict(xy=(x1[i] - 0.5, y1[i] - 0.5), width=x2[i] - x1[i], height=y2[i] - y1[i], fill=False,
                   ec=BOX_COLOUR, lw=1.3)
        _image(row[0], images[i])
        row[0].add_patch(plt.Rectangle(**box))
        for j, m in enumerate(stage_maps.values()):
            im = row[1 + j].imshow(m[i], cmap=MAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
        im = row[-2].imshow(combined[i], cmap=MAP_CMAP, vmin=0, vmax=1)
        row[-2].add_patch(plt.Rectangle(**box))
        _image(row[-1], mixed[i])
        for ax in row:
            _bare(ax)
        if mixed_labels is not None:
            row[-1].set_xlabel(mixed_labels[i], fontsize=7, labelpad=2)
        if row_labels is not None:
            row[0].set_ylabel(row_labels[i], fontsize=7.5, rotation=0, ha="right", va="center", labelpad=4)
    for ax, name in zip(axes[0], ["image + box", *stage_maps, "combined + box", "mixed"]):
        ax.set_title(name, fontsize=8)
    cbar = fig.colorbar(im, ax=axes, shrink=min(1.0, 3.0 / n), aspect=15, pad=0.02)
    cbar.set_label(MAP_LABEL, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=8.5)
    if note:
        fig.supxlabel(note, fontsize=7, color="0.3")
    return fig


def gallery_options(run_dir, **overrides):
    """The GradMix options a gallery of ``run_dir`` uses: the run's own when it is a GradMix run
    (either track), else GradMix's defaults on the model's last two stages; ``overrides`` (fields
    of :class:`~gradmix.mixing.GradMixOptions`, e.g. ``fill="partner"``; ``stages=()`` keeps the
    default) replace fields. Raises ConfigError for an invalid value."""
    from .mixing import GradMixOptions
    from .train import load_model

    cfg, info = run_config(run_dir)
    own = (cfg.contrastive if info.get("track") == "contrastive" else cfg).method(info["method"]).options
    if not isinstance(own, GradMixOptions):
        own = GradMixOptions(stages=load_model(run_dir).stages[-2:])
    from .checks import list_parameter

    overrides = {k: tuple(list_parameter("stages", v)) if k == "stages" else v for k, v in overrides.items()
                 if k != "stages" or v}
    return dataclasses.replace(own, **overrides)


def _explain(run_dir, x, y, options, objective, num_classes, generator, device, norm=None):
    """(explain output, objective used, whether the loss weight is λ′) for the run's track;
    ``objective`` None keeps the run's own; ``norm``: (mean, std) of x (the contrastive views' colour
    operations)."""
    from .mixing.gradmix import explain
    from .train import load_model

    cfg, info = run_config(run_dir)
    if info.get("track") != "contrastive":
        o = dataclasses.replace(options, objective=objective or options.objective)
        out = explain(load_model(run_dir, device), x, y, num_classes=num_classes, generator=generator, options=o)
        return out, o.objective, o.weight == "unmasked"
    from .contrastive import OBJECTIVES, explain as explain_contrastive, explain_method
    from .contrastive.runs import load_net
    from .checks import check_choice

    method = explain_method(cfg.contrastive, info["method"], options.stages)
    if objective:
        check_choice("contrastive objective", objective, OBJECTIVES)
    method = dataclasses.replace(method, options=options, objective=objective or method.objective)
    out = explain_contrastive(load_net(run_dir, device), x, y, method=method, cfg=cfg.contrastive,
                              num_classes=num_classes, generator=generator, norm=norm)
    return out, method.objective, method.weight == "lam"


def gallery_from_run(run_dir, n: int = 6, options=None, seed: int = 0, device="cpu", *, images=None,
                     objective: str | None = None, reference=None):
    """Gallery (:func:`gallery_figure`) of a trained run: attribution maps, GradMix box and mixed image.

    ``images``: indices into the split's known test set (default: :func:`one_per_class`). ``options``
    (:class:`~gradmix.mixing.GradMixOptions`) defaults to :func:`gallery_options`; every image is
    mixed (``prob`` 1). ``objective``: what the maps differentiate, default the run's own (cross-
    entropy track: gt_logit | pred_logit | ce; contrastive track: simclr | supcon | loss, maps of
    the contrastive loss of a view pair as the authors compute them). ``reference``: the
    pipeline's Config, to flag runs trained shorter as smoke models (:func:`training_budget`).

    Each row shows λ, the box parameter drawn from lam_low + lam_span·Beta(α, β) (one per batch
    unless ``per_sample``; box side int(S·sqrt(1 - λ))), and λ′, the fraction of the image left
    unmasked after clipping the box to the image (the mixed view's loss weight under ``weight``
    unmasked / lam). λ is drawn here from ``seed`` and passed to GradMix as a fixed value
    (``lam_span`` 0), so the box the figure shows is the one λ gives.
    """
    import torch

    from .data import load_openset
    from .mixing.boxes import sample_beta

    cfg, info = run_config(run_dir)
    options = options or gallery_options(run_dir)
    data = load_openset(cfg.data, info["split"], device)
    idx = one_per_class(data.y_known, n) if images is None else torch.as_tensor(images).long()
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(data.x_known):
        raise IndexError(f"images {idx.tolist()} out of range: the known test set of {run_dir} has "
                         f"{len(data.x_known)} images (0..{len(data.x_known) - 1})")
    x, y = data.x_known[idx], data.y_known[idx]
    gen = torch.Generator(device=device).manual_seed(seed)
    o = dataclasses.replace(options, prob=1.0)
    lam = o.lam_low + o.lam_span * sample_beta(o.alpha, o.beta, len(x) if o.per_sample else 1, gen).double()
    rows = []                               # one explain call per drawn λ; row i from the call of its λ
    for lam_i in lam.tolist():
        out, obj, lam_weight = _explain(run_dir, x, y, dataclasses.replace(o, lam_low=lam_i, lam_span=0.0),
                                        objective, data.num_classes, gen, device, (data.mean, data.std))
        rows.append(out)
    pick = (lambda k: rows[k if o.per_sample else 0])
    stages = list(rows[0]["stage_maps"])
    stage_maps = {s: np.stack([pick(k)["stage_maps"][s][k].cpu().numpy() for k in range(len(x))]) for s in stages}
    combined = np.stack([pick(k)["combined"][k].cpu().numpy() for k in range(len(x))]) / len(stages)
    bounds = [np.array([int(pick(k)["bounds"][b][k]) for k in range(len(x))]) for b in range(4)]
    mixed_x = torch.stack([pick(k)["mixed"].x[k] for k in range(len(x))])
    lam_prime = [float(pick(k)["mixed"].lam[k]) for k in range(len(x))]
    lams = [lam[k if o.per_sample else 0].item() for k in range(len(x))]
    labels = [f"class {data.class_names[int(c)]}\nλ = {a:.2f}\nλ′ = {b:.2f}" for c, a, b in zip(y, lams, lam_prime)]
    track = "contrastive" if info.get("track") == "contrastive" else "cross-entropy"
    soft = None                                      # cross-entropy track, partner fills: the soft label
    if o.fill != "noise" and track == "cross-entropy":
        targets = torch.stack([pick(k)["mixed"].target[k] for k in range(len(x))]).cpu()
        soft = [" + ".join(f"{float(t[c]):.2f}·{data.class_names[int(c)]}" for c in torch.argsort(t, descending=True)
                           if float(t[c]) > 0) for t in targets]

    budget = training_budget(run_dir, reference)
    title = (f"{info['method']} ({track}) · {Path(run_dir).parent.name}/{Path(run_dir).name} · "
             f"{budget['epochs']} epoch{'s' * (budget['epochs'] != 1)}\n"
             f"{o.attribution} on {'+'.join(stages)}, objective {obj}, normalise {o.normalize}, "
             f"centre {o.centre}, fill {o.fill}")
    if budget["smoke"]:
        title = f"SMOKE MODEL, barely trained, not a result: {budget['why']}\n" + title
    note = ("λ: drawn box parameter (box area ≈ 1 − λ);  λ′: fraction left unmasked = "
            + ("the mixed view's loss weight" if lam_weight else "(loss weight 1: weight one)"))
    fig = gallery_figure(display_images(data, x), stage_maps, combined, bounds, display_images(data, mixed_x),
                         row_labels=labels, title=title, note=note, mixed_labels=soft)
    if budget["smoke"]:
        fig._suptitle.set_color("#b00020")
    return fig


def saliency_mixing_figure(run_dir, options: dict, n: int = 4, seed: int = 0, device="cpu", reference=None):
    """R-Mix and Saliency Grafting on ``n`` known test images, with the trained model of ``run_dir``.

    ``options``: {method name: RMixOptions | GraftingOptions}. Per method, columns = image i, its
    partner j, i's grid saliency (min-max normalised, :data:`MAP_CMAP`, [0, 1]), the share of each
    pixel that stays i's (1 own, 0 partner's, w1 where R-Mix blends; grey), the mixed image titled
    with its label weights.
    """
    import torch

    from .data import load_openset
    from .mixing.grafting import GraftingOptions, grafting_parts
    from .mixing.rmix import rmix_parts
    from .train import load_model

    cfg, info = run_config(run_dir)
    model = load_model(run_dir, device)
    data = load_openset(cfg.data, info["split"], device)
    idx = torch.linspace(0, len(data.x_known) - 1, 2 * n).long()
    x, y = data.x_known[idx], data.y_known[idx]
    names = data.class_names
    cols = ("image i", "partner j", "saliency of i", "share of i", "mixed")
    fig, axes = plt.subplots(n, 5 * len(options), figsize=(1.5 * 5 * len(options) + 1.2, 1.6 * n + 0.6),
                             squeeze=False)
    sal = None
    for k, (method, o) in enumerate(options.items()):
        gen = torch.Generator(device=device).manual_seed(seed)
        o = dataclasses.replace(o, prob=1.0)
        parts_fn = grafting_parts if isinstance(o, GraftingOptions) else rmix_parts
        p = parts_fn(x, y, num_classes=data.num_classes, generator=gen, options=o, model=model)
        m, j = p["mixed"], p["partner"]
        if isinstance(o, GraftingOptions):
            share = 1.0 - p["mask"][:, 0].float()
        else:
            share = p["own"][:, 0].float() + p["w1"] * p["blend"][:, 0].float()
        cells = p["cells"].float()
        lo, hi = cells.flatten(1).amin(1)[:, None, None], cells.flatten(1).amax(1)[:, None, None]
        cells = ((cells - lo) / (hi - lo).clamp_min(1e-12)).cpu().numpy()
        imgs, mixed = display_images(data, x), display_images(data, m.x)
        for r in range(n):
            i, jj = r, int(j[r])
            row = axes[r][5 * k:5 * k + 5]
            _image(row[0], imgs[i])
            _image(row[1], imgs[jj])
            sal = row[2].imshow(cells[i], cmap=MAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
            row[3].imshow(share[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            _image(row[4], mixed[i])
            a, b = int(y[i]), int(y[jj])
            row[4].set_title(f"{m.target[i, a]:.2f}·{names[a]}" + (f" + {m.target[i, b]:.2f}·{names[b]}" if a != b
                                                                      else ""), fontsize=7)
            for ax in row:
                _bare(ax)
            if r == 0:
                for ax, c in zip(row[:4], cols):
                    ax.set_title(c, fontsize=7)
        axes[0][5 * k].set_ylabel(method, fontsize=9)
    cbar = fig.colorbar(sal, ax=axes, fraction=0.02, pad=0.01)
    cbar.set_label("saliency, min-max per image [0, 1]", fontsize=7)
    budget = training_budget(run_dir, reference)
    title = f"{info['method']} model · {Path(run_dir).name} · {budget['epochs']} epochs"
    fig.suptitle((f"SMOKE MODEL, not a result: {budget['why']}\n" if budget["smoke"] else "") + title, fontsize=9,
                 color="#b00020" if budget["smoke"] else "k")
    return fig
