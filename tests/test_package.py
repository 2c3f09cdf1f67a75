"""Package metadata: one version (recorded by every run), the license pyproject names, a citation file
that cites the paper."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import gradmix
from gradmix import rundir

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gradmix.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", gradmix.__version__)
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == gradmix.__version__


def test_license_is_the_one_pyproject_names():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    text = (ROOT / "LICENSE").read_text()
    assert project["project"]["license"] == "MIT" and text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the gradmix authors" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_citation_prefers_the_gradmix_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper == cff["references"][0] and paper["type"] == "article" and paper["year"] == 2025
    assert [a["family-names"] for a in paper["authors"]] == ["Xu", "Kao", "Keuper"]
    assert paper["title"].startswith("Informed Mixing") and "2505.12803" in paper["url"]
    assert {i["value"] for i in paper["identifiers"]} == {"arXiv:2505.12803", "10.48550/arXiv.2505.12803"}


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_runs_record_version_and_commit():
    """Every run's config.json records (rundir.environment) the running package's version and, in a
    checkout, its git commit and whether the package sources differ from it."""
    env = rundir.environment("cpu")
    assert env["gradmix"] == gradmix.__version__
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert env["git_commit"] == _git("rev-parse", "HEAD")
    assert env["git_dirty"] is bool(_git("status", "--porcelain", "--untracked-files=no", "--", "gradmix"))


def test_no_commit_from_a_repository_that_only_encloses_the_package(tmp_path):
    """An installed copy inside someone else's git repository records no commit (not that repository's)."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    site = tmp_path / "project" / "venv" / "site-packages"
    shutil.copytree(ROOT / "gradmix", site / "gradmix", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(tmp_path / "project")], check=True)
    code = "import json; from gradmix import rundir; print(json.dumps(rundir.environment('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(site)})
    env = json.loads(out.stdout.strip().splitlines()[-1])
    assert env["gradmix"] == gradmix.__version__ and env["git_commit"] is None and env["git_dirty"] is None
