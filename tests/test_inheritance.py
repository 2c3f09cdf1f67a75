"""Method inheritance in params.yaml (YAML merge keys): resolved values, DVC's view, and the errors."""
import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from gradmix import config
from gradmix.checks import ConfigError
from gradmix.inheritance import read_params

ROOT = Path(__file__).resolve().parents[1]


def differing(a, b) -> set[str]:
    a, b = dataclasses.asdict(a), dataclasses.asdict(b)
    return {k for k in a if a[k] != b[k]}


def test_variants_differ_from_their_base_only_where_written():
    cfg = config.load(ROOT / "params.yaml")
    g = cfg.method("gradmix")
    assert (g.mixer, g.use, g.options.centre, g.options.fill, g.options.weight) == \
        ("gradmix", "extra", "peak", "noise", "unmasked")
    assert differing(cfg.method("gradmix_random").options, g.options) == {"centre"}
    # the code-faithful sign (the training loss, the authors' code) beside the paper's wording (gt_logit)
    assert g.options.objective == "gt_logit" and cfg.method("gradmix_ce").options.objective == "ce"
    assert differing(cfg.method("gradmix_ce").options, g.options) == {"objective"}
    order = list(cfg.pipeline_methods)
    assert order[order.index("gradmix") + 1] == "gradmix_ce"
    assert differing(cfg.method("gradmix_partner").options, g.options) == {"fill"}
    replace = cfg.method("gradmix_replace")
    assert differing(replace.options, g.options) == {"fill", "weight"} and replace.use == "replace"
    assert cfg.method("gradmix_random").use == cfg.method("gradmix_partner").use == "extra"
    c = cfg.contrastive
    assert dataclasses.replace(c.method("simclr_gradmix"), name="x", gamma=1.0) == \
        dataclasses.replace(c.method("supcon_gradmix"), name="x")
    assert c.method("simclr_none").gamma == 0.0 and c.method("simclr_none").view == "none"


def test_dvc_reads_the_same_resolved_methods():
    """DVC's params loader (what its per-stage `methods.<name>` dependencies hash) resolves the merge
    keys to the values gradmix trains with, so inheriting adds no change DVC cannot see."""
    from dvc.utils.serialize import load_yaml

    ours = read_params((ROOT / "params.yaml").read_text())
    theirs = load_yaml(ROOT / "params.yaml")
    assert theirs["methods"] == ours["methods"] and theirs["contrastive"] == ours["contrastive"]
    assert theirs["methods"]["gradmix_replace"]["stages"] == ["stage2", "stage3"]


def test_dvc_set_param_keeps_a_working_file(tmp_path):
    """`dvc exp run -S` rewrites params.yaml with DVC's apply_overrides: the result still loads, the
    set key changes and every inheriting method keeps its values (DVC writes them out in full)."""
    pytest.importorskip("hydra")
    from dvc.utils.hydra import apply_overrides

    for name in ("params.yaml", "params_paper.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    before = config.load(tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", ["methods.gradmix.fill=partner"])
    after = config.load(tmp_path / "params.yaml")
    assert after.method("gradmix").options.fill == "partner"
    assert {m: after.method(m) for m in after.methods if m != "gradmix"} == \
        {m: before.method(m) for m in before.methods if m != "gradmix"}
    assert after.contrastive == before.contrastive


BASE = """\
methods:
  erm:
    mixer: none
  cutmix: &cutmix
    mixer: cutmix
    beta: 1.0
  gradmix: &gradmix
    mixer: gradmix
    centre: peak
"""


def variant(text: str) -> str:
    return BASE + textwrap.indent(textwrap.dedent(text), "  ")


@pytest.mark.parametrize("text, match", [
    (variant("""\
        gradmix_random:
          <<: *gradmx
          centre: random
        """), r"params.yaml line 11: methods.gradmix_random: `<<: \*gradmx` names no anchor defined above it; "
              r"valid anchors: \['cutmix', 'gradmix'\]"),
    (variant("""\
        loop: &loop
          mixer: gradmix
          <<: *loop
        """), r"methods.loop: `<<: \*loop` refers to methods.loop, which contains it \(a cycle\); "
              r"valid anchors: \['cutmix', 'gradmix'\]"),
    (variant("""\
        boxed:
          <<: *gradmix
          mixer: cutmix
        """), r"methods.boxed: inherits \(`<<: \*gradmix`\) from methods.gradmix, whose mixer is 'gradmix', but "
              r"sets mixer 'cutmix'; inherit from a method with mixer 'cutmix': valid bases: \['cutmix'\]"),
    (variant("""\
        student:
          <<: *cutmix
          kind: distill
        """), r"methods.student: inherits \(`<<: \*cutmix`\) from methods.cutmix, whose kind is 'ce', but sets "
              r"kind 'distill'; .*valid bases: \[\]"),
    (variant("""\
        odd:
          <<: *stages
        """).replace("methods:\n", "stages: &stages {mixer: gradmix}\nmethods:\n"),
     r"methods.odd: `<<: \*stages` merges stages, not a method of methods; valid bases: the methods of methods: "),
])
def test_bad_inheritance_names_method_key_and_choices(text, match):
    yaml.safe_load(text.replace("*gradmx", "*gradmix"))        # the same text is otherwise valid YAML
    with pytest.raises(ConfigError, match=match):
        read_params(text)


def test_contrastive_variants_keep_their_view_and_errors_reach_load(tmp_path):
    raw = (ROOT / "params.yaml").read_text()
    bad = raw.replace("    simclr_none:           # self-supervised (γ = 0): SimCLR only\n      <<: *supcon_none\n",
                      "    simclr_none:           # self-supervised (γ = 0): SimCLR only\n      <<: *supcon_none\n"
                      "      view: aug\n")
    assert bad != raw
    (tmp_path / "params.yaml").write_text(bad)
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'params.yaml'} line \d+: contrastive.methods.simclr_none: "
                                          r"inherits .*whose view is 'none', but sets view 'aug'.*\['supcon_aug'\]"):
        config.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text(raw.replace("<<: *gradmix_partner", "<<: *gradmix_partnr"))
    with pytest.raises(ConfigError, match=r"methods.gradmix_replace: `<<: \*gradmix_partnr` names no anchor.*"
                                          r"'gradmix_partner'"):
        config.load(tmp_path / "params.yaml")


def test_plain_aliases_and_nested_anchors_are_fine():
    data = read_params(variant("""\
        mix2:
          <<: *cutmix
          beta: 2.0
        """) + "pipeline:\n  methods: &roster [erm, cutmix]\nbench:\n  methods: *roster\n")
    assert data["methods"]["mix2"] == {"mixer": "cutmix", "beta": 2.0}
    assert data["bench"]["methods"] == ["erm", "cutmix"]
