"""The README and docs/: their Python examples run, their links resolve, their numbers are the committed
ones, their figures are small committed files, and they point to nothing outside the repository."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# Pages a link may point to before they exist (none: every page linked is in the repository).
ELSEWHERE: set[str] = set()

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def python_blocks(text: str) -> list[str]:
    return [code for lang, code in FENCE.findall(text) if lang == "python"]


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"`|\*\*|\[|\]\([^)]*\)", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), re.M)}


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z]+:", t)]


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    """Every ```python block of the README, in order, in one namespace, from the repository root."""
    blocks = python_blocks(README.read_text())
    assert blocks, "the README has no ```python example"
    code = "\n".join(blocks)
    assert "runs/" not in re.sub(r"#.*", "", code), "an example must not write into runs/ (a pipeline output)"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TMPDIR", str(tmp_path))          # the example's tempfile.mkdtemp() lands here
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    assert "auroc_mls" in out and "oscr_mls" in out
    mixed, data = namespace["mixed"], namespace["data"]
    assert mixed.target.shape == (32, data.num_classes)
    assert (mixed.target.sum(1) - 1).abs().max() < 1e-6
    assert list(tmp_path.rglob("complete.json")), "the example's run should be written under the temporary folder"
    assert not (ROOT / "runs" / "gradmix" / "split0-seed0.tmp").exists()


def test_every_relative_link_resolves():
    problems = []
    for page in PAGES:
        for target in links(page):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
            if not dest.is_relative_to(ROOT):
                problems.append(f"{page.name}: {target} points outside the repository")
            elif not dest.exists():
                if rel not in ELSEWHERE:
                    problems.append(f"{page.name}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{page.name}: {target}: no heading with anchor #{anchor} in {rel}")
    assert problems == []


def test_link_checker_finds_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A `code` heading: here\n[ok](#a-code-heading-here) [img](x.png) `[no](link)`\n"
                    "```\n[not](a link)\n```\n[web](https://example.org) [bad](#nowhere)\n")
    assert links(page) == ["#a-code-heading-here", "x.png", "#nowhere"]
    assert "a-code-heading-here" in anchors(page) and "nowhere" not in anchors(page)
    assert slug("`data.dvc`: what it tracks") == "datadvc-what-it-tracks"
    assert slug("Method inheritance in params.yaml") == "method-inheritance-in-paramsyaml"


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("|---")]


def test_readme_results_are_the_committed_table():
    """The README's results table is results/tables/digits_main.md, row for row (refresh both together)."""
    committed = table_rows((ROOT / "results/tables/digits_main.md").read_text())
    readme = README.read_text()
    assert len(committed) > 2
    missing = [row for row in committed if row not in readme.splitlines()]
    assert missing == [], "README's table differs from results/tables/digits_main.md"


def test_readme_figures_are_small_committed_pngs_on_the_first_screen():
    text = README.read_text()
    first_screen = text[: text.index("\n## Contents")]
    tracked = set(subprocess.run(["git", "ls-files", "docs/img"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())
    for name in ("docs/img/metrics.png", "docs/img/gallery.png"):
        assert f"]({name})" in first_screen, f"{name} is not embedded before the table of contents"
        data = (ROOT / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
        assert name in tracked or not (ROOT / ".git").exists()
    assert "methods.md" in first_screen and "not available" in first_screen   # the main limitation, beside the results


INTERNAL = re.compile(r"shared/(design|research)|/work/|\b(skeleton|calibration) (issue|run)\b|the issue\b|"
                      r"\blent\b|no GPU was", re.I)


def test_nothing_points_outside_the_repository_or_to_internal_process():
    """No tracked text file refers to files users do not have or to how this project was organised."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if f.endswith((".md", ".py", ".yaml", ".ipynb", ".cff", ".toml", ".yml", "Makefile"))
             and f != "tests/test_docs.py" and (ROOT / f).is_file()]
    hits = [f"{f}:{n}: {line.strip()[:100]}" for f in files
            for n, line in enumerate((ROOT / f).read_text().splitlines(), 1) if INTERNAL.search(line)]
    assert hits == []



def test_no_python_example_writes_into_the_pipelines_runs_folder():
    """runs/ is a DVC output: code that trains into it makes the next `dvc repro` retrain its stages."""
    hits = [f"{page.name}: {line.strip()}" for page in PAGES for block in python_blocks(page.read_text())
            for line in block.splitlines() if re.search(r"[\"']runs([/\"'])", re.sub(r"#.*", "", line))]
    assert hits == []


def test_docs_pages_named_anywhere_exist():
    """A docs/<page>.md named in code, notebooks, params or the Makefile exists."""
    out = subprocess.run(["git", "grep", "-h", "-o", r"docs/[a-z_]*\.md", "--", ":!tests/test_docs.py"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    named = set(out.split())
    assert "docs/methods.md" in named
    assert sorted(p for p in named - ELSEWHERE if not (ROOT / p).is_file()) == []
