"""Package metadata: one version, the license pyproject names, a citation file that cites the paper."""
import re
import tomllib
from pathlib import Path

import yaml

import gradmix

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
