"""End to end: the DVC + papermill pipeline on a tiny profile, in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def sh(cmd, cwd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def scratch_copy(copy: Path, change) -> tuple[dict, dict]:
    """Copy the repository's tracked files (no runs, results, lock) into ``copy``, let ``change(params)``
    edit params.yaml there, and commit it to a fresh git repository; return (params, env)."""
    for f in tracked_files():
        if f.startswith(("runs/", "results/")) or f == "dvc.lock":
            continue
        (copy / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, copy / f)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    change(params)
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    sh("git init -q && git add -A && git commit -qm init", copy, env)
    return params, env


def tracked_files():
    if (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        return [f for f in out if (ROOT / f).is_file()]
    skip = {".venv", "runs", "results", ".git", "__pycache__"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(path):
    """No outputs or execution counts, a tagged parameters cell, stable unique cell ids."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids) and all(ids)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run `dvc repro` once on a tiny profile in a temporary copy; return the copy."""
    copy = tmp_path_factory.mktemp("repo")
    params, env = scratch_copy(copy, tiny)
    sh("dvc repro", copy, env)
    return copy, params, env


def tiny(params):
    params["data"].update(splits=[0, 1], max_train=96, image_size=12)
    params["train"].update(epochs=1, progress=False)
    params["contrastive"]["train"].update(epochs=1)
    params["ood"].update(num_generated=32)
    params["corruption"].update(severities=[1, 5], max_images=32)


def test_pipeline_writes_metrics_figures_tables_for_every_method(pipeline):
    copy, params, _ = pipeline
    methods = params["pipeline"]["methods"] + params["pipeline"].get("distill", [])
    metrics = json.loads((copy / "results/metrics.json").read_text())
    assert list(metrics) == ["digits"]
    contrastive = params["contrastive"]["pipeline"]
    assert list(metrics["digits"]) == methods + contrastive
    for m in contrastive:
        for key in ("accuracy", "auroc_knn", "oscr_knn", "probe_accuracy"):
            assert 0 <= metrics["digits"][m][key]["mean"] <= 1 and metrics["digits"][m][key]["n"] == 2
    for m in methods:
        row = metrics["digits"][m]
        for key in ("accuracy", "auroc_msp", "auroc_mls", "oscr_msp", "oscr_mls"):
            assert set(row[key]) == {"mean", "std", "n"} and row[key]["n"] == 2
            assert 0 <= row[key]["mean"] <= 1
    for fig in ("data", "ce/metrics", "ce/roc", "ce/scores", "ce/gallery", "ce/mixing", "contrastive/metrics",
                "contrastive/roc", "contrastive/scores", "contrastive/gallery"):
        assert (copy / f"results/figures/{fig}.png").stat().st_size > 1000
    diffs = json.loads((copy / "results/differences.json").read_text())["digits"]
    assert {(d["a"], d["b"]) for d in diffs} >= {("gradmix", "erm"), ("gradmix", "gradmix_random"),
                                                 ("gradmix_ce", "gradmix"), ("supcon_gradmix", "supcon_none")}
    assert all(d["n"] == 2 for d in diffs)
    assert "masked_fraction" in metrics["digits"]["gradmix"] and "masked_fraction" not in metrics["digits"]["erm"]
    assert "gradmix − erm" in (copy / "results/tables/digits_differences.md").read_text()
    for ext in ("md", "tex"):
        table = (copy / f"results/tables/digits_main.{ext}").read_text()
        assert all(m.replace("_", r"\_" if ext == "tex" else "_") in table for m in methods + contrastive)
    for name in ("ood", "corruption"):
        robust = json.loads((copy / f"results/{name}.json").read_text())
        assert set(methods) <= set(robust["digits"]), name
    executed = {p.name for p in (copy / "results/notebooks").glob("*.ipynb")}
    assert {"data.ipynb", "evaluate.ipynb", "figures.ipynb", "tables.ipynb"} <= executed
    assert {f"train_{m}.ipynb" for m in methods} | {"teacher.ipynb"} <= executed


def test_dvc_metrics_and_plots_after_repro(pipeline):
    """One small metrics file; plots overlay every method from data files; executed notebooks only
    complete ones; each training stage printed its device and plan."""
    copy, params, env = pipeline
    methods = params["pipeline"]["methods"] + params["pipeline"].get("distill", [])
    contrastive = params["contrastive"]["pipeline"]
    shown = json.loads(sh("dvc metrics show --json", copy, env))
    (files,) = [v["data"] for v in shown.values()]
    assert list(files) == ["results/summary.json"]
    summary = files["results/summary.json"]["data"]["digits"]
    assert list(summary) == methods + contrastive
    assert all(set(m) == {"accuracy", "auroc", "oscr"} and all(0 <= v <= 1 for v in m.values())
               for m in summary.values())
    plots = json.loads(sh("dvc plots show --json", copy, env))
    assert not plots.get("errors")
    drawn = {k: {d["method"] for d in v[0]["content"]["data"]["values"]}
             for k, v in plots["data"].items() if v[0]["type"] == "vega"}
    assert drawn == {"training_loss": set(methods), "training_accuracy": set(methods),
                     "training_auroc": set(methods), "roc": set(methods + contrastive)}
    assert (copy / "results/plots/roc.csv").stat().st_size < 100_000
    assert not list((copy / "results/notebooks").glob("*.part.ipynb"))
    train = nbformat.read(copy / "results/notebooks/train_erm.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in train.cells for o in c.get("outputs", []))
    assert "train: device: cpu" in printed and "erm: 2 splits [0, 1] × seed 0 × 1 epoch = 2 runs" in printed


def test_second_repro_does_nothing(pipeline):
    copy, _, env = pipeline
    out = sh("dvc repro", copy, env)
    assert "Running stage" not in out
    assert "up to date" in sh("dvc status dvc.yaml", copy, env)  # data.dvc is absent offline, by design


def test_fresh_clone_sees_no_changed_dependency(pipeline, tmp_path):
    """Commit the lock file and clone: no stage sees a changed source dependency (notebook, module) or
    param; only outputs, which live in the DVC cache and not in git, are absent."""
    copy, _, env = pipeline
    sh("git add -A && git commit -qm results", copy, env)
    sh(f"git clone -q {copy} {tmp_path / 'clone'}", tmp_path, env)
    status = json.loads(sh("dvc status --json", tmp_path / "clone", env) or "{}")
    assert status, "the clone has no cached outputs, so dvc status must report them"
    for stage, changes in status.items():
        for change in changes:
            assert isinstance(change, dict) and set(change) <= {"changed outs", "changed deps"}, (stage, change)
            assert set(change.get("changed outs", {}).values()) <= {"deleted", "not in cache"}, (stage, change)
            # a dependency may only differ where it is another stage's (uncached) output
            assert all(p.startswith(("runs", "results/")) for p in change.get("changed deps", {})), (stage, change)


def test_empty_tracks_run_and_declare_only_what_they_write(tmp_path):
    """No contrastive method, no distilled student, no box mixer: `dvc repro` runs every stage, each
    writes exactly its declared outputs (the contrastive figures folder and teacher.dir stay empty,
    no teacher is trained), and the tables and differences cover the methods that ran."""
    def empty(params):
        tiny(params)
        params["data"].update(splits=[0], max_train=64)
        params["contrastive"]["pipeline"] = []
        params["pipeline"].update(methods=["erm", "mixup"], distill=[])
        params["ood"].update(far=["uniform_noise"])
        params["corruption"].update(corruptions=["gaussian_noise"], severities=[1])

    params, env = scratch_copy(tmp_path, empty)
    out = sh("dvc repro", tmp_path, env)
    assert "Running stage 'figures'" in out and "Running stage 'teacher'" in out
    assert "up to date" in sh("dvc status dvc.yaml", tmp_path, env)    # every declared output exists
    assert sorted(p.name for p in (tmp_path / "results/figures/ce").iterdir()) == \
        ["gallery.png", "metrics.png", "mixing.png", "roc.png", "scores.png"]
    assert not any((tmp_path / "results/figures/contrastive").iterdir())
    assert not any((tmp_path / "runs/teacher").iterdir())
    metrics = json.loads((tmp_path / "results/metrics.json").read_text())
    assert list(metrics["digits"]) == ["erm", "mixup"]
    diffs = json.loads((tmp_path / "results/differences.json").read_text())["digits"]
    assert {(d["a"], d["b"]) for d in diffs} == {("mixup", "erm")} and all(d["n"] == 1 for d in diffs)
    table = (tmp_path / "results/tables/digits_full.md").read_text()
    assert "mixup" in table and "Masked area" not in table          # no box method: no masked column
