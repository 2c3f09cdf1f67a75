"""The Makefile: `make help` documents every target; `make clean` removes only what the pipeline
regenerates and never a file git tracks; `make clean-checkpoints` is separate.

`make clean` runs for real in a scratch repository built from this working tree's tracked files
(the Makefile under test included), with fabricated pipeline outputs beside them.
"""
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None,
                                reason="needs make and git")


def phony_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    line = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1)
    return line.split()


def test_help_lists_every_target_with_a_line_of_text():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    described = dict(re.findall(r"^  ([a-z-]+)\s+(\S.*)$", out, re.M))
    targets = phony_targets()
    assert {"help", "env", "repro", "test", "bench", "data", "readme-figures", "clean", "clean-checkpoints"} <= set(targets)
    assert sorted(described) == sorted(targets), "every .PHONY target needs a '## text' on its line, no other"
    assert "gradmix --help" in out and "examples/" in out
    # `make` alone prints the help instead of starting a long install
    assert subprocess.run(["make", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout == out


def _digests(root: Path, files) -> dict[str, str]:
    """File -> sha256 of its bytes, or "deleted"."""
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() if (root / f).is_file() else "deleted"
            for f in files}


@pytest.fixture
def scratch(tmp_path):
    """A git repository holding this working tree's tracked files, committed."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    files = [f for f in files if f and (ROOT / f).is_file()]
    repo = tmp_path / "repo"
    for f in files:
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, repo / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "tracked files"], cwd=repo, check=True)
    return repo, files


REGENERATED = ["runs/erm/split0-seed0/model.pt", "runs/erm/split1-seed0.tmp/log.csv", "runs/teacher/split0-seed0/x",
               "runs/mine/split0-seed0/scores.npz",                      # a method trained outside DVC too
               "results/notebooks/train_erm.ipynb", "results/notebooks/figures.part.ipynb",
               "results/figures/metrics.png", "results/figures/gallery.png", "results/runs.csv",
               "dvc_plots/index.html", ".dvc/tmp/rwlock"]
KEPT = ["checkpoints/runs/erm/split0-seed0/final/model.pt",               # make clean-checkpoints only
        "results/summary.json", "results/plots/roc.csv", "results/plots/training.csv",   # committed results
        "data/downloads/cifar-10-python.tar.gz", ".dvc/cache/files/md5/ab/cdef"]


def test_clean_removes_pipeline_outputs_and_never_a_tracked_file(scratch):
    repo, tracked = scratch
    (repo / "results/tables/digits_main.md").write_text("edited, not committed\n")   # a local edit survives too
    before = _digests(repo, tracked)
    for f in REGENERATED + [k for k in KEPT if k not in tracked]:   # committed results are checked as tracked files
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("output\n")

    subprocess.run(["make", "-s", "clean"], cwd=repo, capture_output=True, text=True, check=True)

    assert _digests(repo, tracked) == before                  # every tracked file, byte for byte
    assert [f for f in REGENERATED if (repo / f).exists()] == []
    assert [f for f in KEPT if not (repo / f).exists()] == []
    assert (repo / "runs/.gitignore").is_file() and (repo / "results/figures/.gitignore").is_file()

    subprocess.run(["make", "-s", "clean-checkpoints"], cwd=repo, capture_output=True, text=True, check=True)
    assert not (repo / "checkpoints").exists()
    assert _digests(repo, tracked) == before
    assert all((repo / f).exists() for f in KEPT if not f.startswith("checkpoints/"))
