"""The interactive explorer of ``notebooks/explore.ipynb``: ipywidgets controls over a GradMix gallery.

:class:`Explorer` shows, for a run under a runs root, the per-stage attribution maps, the combined
map, the GradMix box and the mixed images (:func:`gradmix.gallery.gallery_from_run`) and redraws
them whenever a control changes (method, attribution, stages, objective, fill, centre, image
index). Every view is :func:`explore_figure`, so the notebook's stored defaults render headless.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from .evaluate import find_runs, read_run, run_config
from .gallery import gallery_from_run, gallery_options

def _first_runs(root) -> dict:
    """{method: its first finished run directory under ``root``}, in find_runs order."""
    runs: dict = {}
    for d in find_runs(root):
        runs.setdefault(d.parent.name, d)
    if not runs:
        raise FileNotFoundError(f"no finished run directories under {Path(root).resolve()}")
    return runs


def run_choices(run_dir) -> dict:
    """What the explorer offers for a run: its model's ``stages``, its track's ``objectives``, its
    own ``default_stages`` and ``default_objective``, and ``n_images`` (its known test images)."""
    from .attribution import OBJECTIVES
    from .contrastive import OBJECTIVES as CONTRASTIVE_OBJECTIVES, explain_method
    from .train import load_model

    cfg, info = run_config(run_dir)
    options = gallery_options(run_dir)
    if info.get("track") == "contrastive":
        objectives = CONTRASTIVE_OBJECTIVES
        own = explain_method(cfg.contrastive, info["method"], options.stages).objective
    else:
        objectives, own = OBJECTIVES, options.objective
    return {"stages": tuple(load_model(run_dir).stages), "objectives": tuple(objectives),
            "default_stages": tuple(options.stages), "default_objective": own,
            "n_images": len(read_run(run_dir)[1]["labels_known"])}


def explore_figure(root, method: str, *, attribution: str = "layercam", stages=(), objective: str = "",
                   fill: str = "noise", centre: str = "peak", index: int = 0, n_images: int = 4, seed: int = 0,
                   device="cpu", reference=None):
    """The explorer's view: :func:`gallery_from_run` of ``method``'s first run under ``root`` for the
    known test images ``index, index + 1, ...`` (``n_images``, wrapping around).

    ``stages`` empty and ``objective`` "" keep the run's own (:func:`run_choices`); ``stages`` may be a
    YAML / JSON list as text (papermill's ``-p stages '["stage3"]'``); the other
    arguments are :class:`~gradmix.mixing.GradMixOptions` fields. Raises ConfigError for an unknown
    method or option value (naming the valid ones) and IndexError for an index outside the set.
    """
    from .checks import check_choice, list_parameter

    stages = list_parameter("stages", stages)      # papermill -p passes a list as its text
    runs = _first_runs(root)
    check_choice("explore method", method, runs)
    run_dir = runs[method]
    n = len(read_run(run_dir)[1]["labels_known"])
    if not 0 <= index < n:
        raise IndexError(f"image index {index} out of range: {run_dir} has {n} known test images (0..{n - 1})")
    options = gallery_options(run_dir, attribution=attribution, stages=tuple(stages), fill=fill, centre=centre)
    return gallery_from_run(run_dir, options=options, seed=seed, device=device, objective=objective or None,
                            images=[(index + k) % n for k in range(n_images)], reference=reference)


class Explorer:
    """ipywidgets controls (method, attribution, stages, objective, fill, centre, image index) over
    :func:`explore_figure`; every change redraws. ``figure`` holds the latest figure, ``error`` the
    message of a failed redraw ("" if none), ``controls`` the widgets by name, ``ui`` the widget to
    display (a notebook displays the Explorer itself)."""

    def __init__(self, root, method: str | None = None, *, attribution: str = "layercam", stages=(),
                 objective: str = "", fill: str = "noise", centre: str = "peak", index: int = 0,
                 n_images: int = 4, seed: int = 0, device="cpu", reference=None):
        import ipywidgets as w

        from .attribution import METHODS
        from .checks import check_choice, list_parameter
        from .mixing.gradmix import FILLS

        stages = list_parameter("stages", stages)      # papermill -p passes a list as its text
        self.root, self.runs = root, _first_runs(root)
        self.fixed = dict(n_images=n_images, seed=seed, device=device, reference=reference)
        method = method or next(iter(self.runs))
        check_choice("explore method", method, self.runs)
        ch = run_choices(self.runs[method])
        self.figure, self.error = None, ""
        self._hold = False
        wide = {"description_width": "70px"}
        self.controls = {
            "method": w.Dropdown(options=list(self.runs), value=method, description="method", style=wide),
            "attribution": w.Dropdown(options=METHODS, value=attribution, description="attribution", style=wide),
            "stages": w.SelectMultiple(options=ch["stages"], value=tuple(stages) or ch["default_stages"], rows=3,
                                       description="stages", style=wide),
            "objective": w.Dropdown(options=self._objectives(ch), value=objective, description="objective", style=wide),
            "fill": w.Dropdown(options=FILLS, value=fill, description="fill", style=wide),
            "centre": w.Dropdown(options=("peak", "random"), value=centre, description="centre", style=wide),
            "index": w.BoundedIntText(value=index, min=0, max=ch["n_images"] - 1, description="image", style=wide),
        }
        self.output = w.Output()
        c = self.controls
        self.ui = w.VBox([w.HBox([c["method"], c["attribution"], c["objective"]]),
                          w.HBox([c["stages"], w.VBox([c["fill"], c["centre"], c["index"]])]), self.output])
        for name, control in c.items():
            control.observe(self._on_method if name == "method" else self.draw, names="value")
        self.draw()

    @staticmethod
    def _objectives(ch) -> list:
        return [(f"run's own ({ch['default_objective']})", "")] + [(o, o) for o in ch["objectives"]]

    def values(self) -> dict:
        """The current control values, as :func:`explore_figure` arguments."""
        return {k: (tuple(v.value) if k == "stages" else v.value) for k, v in self.controls.items()}

    def _on_method(self, change):
        """A new run: its stages, objectives and image count replace the old run's, then one redraw."""
        ch = run_choices(self.runs[change["new"]])
        c = self.controls
        self._hold = True
        try:
            c["stages"].value = ()
            c["stages"].options = ch["stages"]
            c["stages"].value = ch["default_stages"]
            c["objective"].options = self._objectives(ch)
            c["objective"].value = ""
            c["index"].max = ch["n_images"] - 1
        finally:
            self._hold = False
        self.draw()

    def draw(self, *_):
        """Redraw the view for the current control values into the output area. A bad combination
        chosen with the controls shows its error message there (the first view raises it)."""
        if self._hold:
            return
        from IPython.display import display

        from .checks import ConfigError

        try:
            fig = explore_figure(self.root, **self.values(), **self.fixed)
        except (ConfigError, ValueError, IndexError) as e:
            if self.figure is None:
                raise
            self.error = f"{type(e).__name__}: {e}"
            with self.output:
                self.output.clear_output(wait=True)
                print(self.error)
            return
        self.error = ""
        with self.output:
            self.output.clear_output(wait=True)
            display(fig)
        plt.close(fig)
        self.figure = fig

    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)
