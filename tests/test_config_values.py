"""Lists and values the config accepts but cannot mean (issue 8 §5.9): each fails before any work,
naming the key, the value and what is valid. The rules are class rules of gradmix.checks.build
(every float finite, every list without repeats, every seed in range), so the tests also walk
every section's dataclass fields to find the members of each class."""
import dataclasses
import math
import typing

import pytest
import yaml

from gradmix import config
from gradmix.checks import SEED, SEED_MAX, ConfigError
from gradmix.contrastive.config import ContrastiveTrainConfig, ViewConfig
from gradmix.distill import DistillOptions
from gradmix.knn import KnnConfig
from gradmix.mixing import MIXERS
from gradmix.probe import ProbeConfig

from conftest import ROOT


def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def refused(r, *texts):
    with pytest.raises(ConfigError) as e:
        config.from_dict(r)
    for t in texts:
        assert t in str(e.value), (t, str(e.value))
    return str(e.value)


# every (params path, dataclass) whose fields params.yaml sets through gradmix.checks.build
SECTIONS = [(("data",), config.DataConfig), (("model",), config.ModelConfig), (("train",), config.TrainConfig),
            (("evaluate",), config.EvalConfig), (("bench",), config.BenchConfig), (("ood",), config.OODConfig),
            (("corruption",), config.CorruptionConfig), (("teacher",), config.TeacherConfig),
            (("contrastive", "train"), ContrastiveTrainConfig), (("contrastive", "views"), ViewConfig),
            (("contrastive", "knn"), KnnConfig), (("contrastive", "probe"), ProbeConfig),
            (("methods", "gradmix"), MIXERS["gradmix"].options), (("methods", "mixup"), MIXERS["mixup"].options),
            (("methods", "cutmix"), MIXERS["cutmix"].options), (("methods", "rmix"), MIXERS["rmix"].options),
            (("methods", "grafting"), MIXERS["grafting"].options),
            (("methods", "asymkd", "distill"), DistillOptions)]


def fields_of(kind):
    for path, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init and kind(hints[f.name], f):
                yield path, f.name, hints[f.name]


def put(r, path, key, value):
    node = r
    for p in path:
        node = node[p]
    node[key] = value
    return r


FLOATS = list(fields_of(lambda t, f: t is float))
SEEDS = list(fields_of(lambda t, f: SEED.search(f.name)))
LISTS = list(fields_of(lambda t, f: typing.get_origin(t) is tuple and not f.metadata.get("repeats")))


def test_the_issue_examples():
    refused(put(raw(), ("train",), "lr", float("inf")), "train.lr", "inf", "finite")
    refused(put(raw(), ("train",), "weight_decay", float("inf")), "train.weight_decay", "finite")
    refused(put(raw(), ("methods", "mixup"), "alpha", float("inf")), "methods.mixup.alpha", "finite")
    refused(put(raw(), ("data",), "splits", [0, 0]), "data.splits", "[0, 0]", "[0] more than once", "each value once")
    refused(put(raw(), ("train",), "seeds", [0, 0]), "train.seeds", "[0] more than once")
    refused(put(raw(), ("data",), "test_fraction", 1.0), "data.test_fraction", "1.0", "(0.0, 1.0)")
    refused(put(raw(), ("train",), "seeds", [-1]), "train.seeds", "-1", "[0, 2^32 - 1")
    refused(put(raw(), ("train",), "seeds", [2**64]), "train.seeds", str(2**64), "[0, 2^32 - 1")
    refused(put(raw(), ("pipeline",), "methods", []), "pipeline.methods", "empty", "erm")
    # members outside the dataclass sections: a contrastive method's loss weights, a --set value
    refused(put(raw(), ("contrastive", "methods", "supcon_none"), "gamma", float("inf")),
            "contrastive.methods.supcon_none.gamma", "finite")
    with pytest.raises(ConfigError, match=r"train.weight_decay: inf is not a finite number"):
        config.load(ROOT / "params.yaml", overrides=["train.weight_decay=.inf"])
    with pytest.raises(ConfigError, match=r"methods.gradmix.beta: inf is not a finite number"):
        config.load(ROOT / "params.yaml", overrides=["methods.gradmix.beta=.inf"])


@pytest.mark.parametrize("path, key, typ", FLOATS, ids=[".".join(p + (k,)) for p, k, _ in FLOATS])
def test_every_float_knob_must_be_finite(path, key, typ):
    for bad in (float("inf"), float("-inf"), float("nan")):
        msg = refused(put(raw(), path, key, bad), ".".join(path + (key,)), "not a finite number")
        assert repr(bad) in msg


def test_float_rule_covers_many_knobs_and_direct_construction():
    assert len(FLOATS) > 30
    with pytest.raises(ConfigError, match="train.lr: inf is not a finite number"):
        config.TrainConfig(lr=math.inf)                  # built in Python, not from params.yaml


@pytest.mark.parametrize("path, key, typ", SEEDS, ids=[".".join(p + (k,)) for p, k, _ in SEEDS])
def test_every_seed_is_in_range(path, key, typ):
    listed = typing.get_origin(typ) is tuple
    for bad in (-1, SEED_MAX + 1, 2**64):
        refused(put(raw(), path, key, [bad] if listed else bad), ".".join(path + (key,)), repr(bad), "not a valid seed")
    config.from_dict(put(raw(), path, key, [SEED_MAX] if listed else SEED_MAX))


def test_seeds_found_in_every_section_that_has_one():
    assert {".".join(p + (k,)) for p, k, _ in SEEDS} >= {"data.split_seed", "data.known_seed", "train.seeds",
                                                         "ood.seed", "corruption.seed"}


@pytest.mark.parametrize("path, key, typ", LISTS, ids=[".".join(p + (k,)) for p, k, _ in LISTS])
def test_no_list_knob_takes_a_repeated_value(path, key, typ):
    r = raw()
    node = r
    for p in path:
        node = node[p]
    value = list(node.get(key) or []) or {"known_classes": ["a"], "methods": ["erm"]}[key]   # empty in params.yaml
    refused(put(r, path, key, value + value[:1]), ".".join(path + (key,)), "more than once")


def test_per_channel_values_may_repeat():
    r = put(put(raw(), ("data",), "mean", [0.5, 0.5, 0.5]), ("data",), "std", [0.25, 0.25, 0.25])
    assert config.from_dict(r).data.mean == (0.5, 0.5, 0.5)


def test_pipeline_lists_refuse_repeats():
    refused(put(raw(), ("pipeline",), "methods", ["erm", "mixup", "erm"]), "pipeline.methods", "['erm'] more than once")
    refused(put(raw(), ("contrastive",), "pipeline", ["supcon_none", "supcon_none"]), "contrastive.pipeline",
            "more than once")
    refused(put(raw(), ("pipeline",), "methods", "erm"), "pipeline.methods", "expected a list")


def test_a_name_in_both_tracks_is_refused():
    r = raw()
    r["contrastive"]["methods"]["mixup"] = {"view": "none"}
    refused(r, "both define ['mixup']", "rename one")


# -- the params file itself -------------------------------------------------------------------------

def write(tmp_path, text, name="params.yaml"):
    (tmp_path / "params_paper.yaml").write_text((ROOT / "params_paper.yaml").read_text())
    path = tmp_path / name
    path.write_text(text)
    return path


def test_empty_params_file_is_refused(tmp_path):
    for text in ("", "# nothing but a comment\n"):
        with pytest.raises(ConfigError, match=r"params\.yaml is empty; it must hold the sections \['data'"):
            config.load(write(tmp_path, text))


def test_truncated_params_file_names_the_missing_sections(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    cut = text[:text.index("\nsmoke:")]                         # cut after the evaluate section
    with pytest.raises(ConfigError, match=r"section\(s\) \['pipeline', 'smoke', 'bench', 'ood', 'corruption', "
                                          r"'profile', 'contrastive', 'teacher'\] missing \(a truncated"):
        config.load(write(tmp_path, cut))
    cut = text[:text.index("  distill:", text.index("\npipeline:"))]   # cut inside the last section
    with pytest.raises(ConfigError, match=r"pipeline\.distill missing \(a truncated file\?\)"):
        config.load(write(tmp_path, cut))
    with pytest.raises(ConfigError, match=r"section\(s\) \['evaluate'\] are \[None\], not mappings"):
        config.load(write(tmp_path, yaml.safe_dump({**raw(), "evaluate": None})))


def test_a_key_left_out_of_a_section_takes_its_default(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  label_smoothing: 0.0\n", "")
    assert config.load(write(tmp_path, text)).train.label_smoothing == 0.0


def test_duplicate_yaml_keys_name_the_key_and_lines(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    twice = text.replace("  lr: 0.05\n", "  lr: 0.05\n  lr: 0.5\n", 1)
    line = twice.splitlines().index("  lr: 0.5") + 1
    with pytest.raises(ConfigError, match=rf"params\.yaml line {line}: train\.lr: duplicate key 'lr' \(first at "
                                          rf"line {line - 1}\)"):
        config.load(write(tmp_path, twice))
    flow = text.replace("data: {splits: [0], max_train: 192}", "data: {splits: [0], splits: [1]}")
    with pytest.raises(ConfigError, match=r"smoke\.data\.splits: duplicate key 'splits'"):
        config.load(write(tmp_path, flow))
    section = text + "\ntrain:\n  epochs: 3\n"
    with pytest.raises(ConfigError, match=r"train: duplicate key 'train'"):
        config.load(write(tmp_path, section))
    profile = (ROOT / "params_paper.yaml").read_text().replace("paper_cifar10:", "paper_cifar10:\n  model: {}\n  model:", 1)
    write(tmp_path, text)
    (tmp_path / "params_paper.yaml").write_text(profile)
    with pytest.raises(ConfigError, match=r"params_paper\.yaml line \d+: paper_cifar10\.model: duplicate key"):
        config.load(tmp_path / "params.yaml", profile="paper_cifar10")


def test_a_variant_overriding_an_inherited_key_is_not_a_duplicate():
    cfg = config.load(ROOT / "params.yaml")
    assert cfg.method("gradmix_random").options.centre == "random"


# -- parameters a pipeline cannot run (issue 8 §5.6) ----------------------------------------------------

@pytest.mark.parametrize("value, reason", [
    ("", "DVC stops on an empty path"), ("runs", "runs/ is where other stages write"),
    ("results/teachers", "results/ is where other stages write"), ("/tmp/teachers", "outside the project"),
    ("../teachers", "outside the project"), ("runs/erm", "overlaps a method's output runs/<method> (runs/erm)"),
    ("runs/supcon_none/t", "overlaps a method's output"),
])
def test_teacher_dir_dvc_cannot_template_is_refused(tmp_path, value, reason):
    r = raw()
    r["teacher"]["dir"] = value
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, yaml.safe_dump(r)))
    assert f"teacher.dir: {value!r}" in str(e.value) and reason in str(e.value) and "runs/teacher" in str(e.value)


def test_a_method_named_teacher_is_refused_in_params(tmp_path):
    r = raw()
    r["methods"]["teacher"] = {"mixer": "none"}
    with pytest.raises(ConfigError, match="the name 'teacher' is reserved for the distillation teacher"):
        config.load(write(tmp_path, yaml.safe_dump(r)))


def test_empty_teacher_dir_stays_valid_where_dvc_does_not_read_it(tmp_path):
    assert config.load(ROOT / "params.yaml", smoke=True).teacher.dir == ""            # the smoke section
    assert config.load(ROOT / "params.yaml", overrides=["teacher.dir="]).teacher.dir == ""
    r = raw()
    r["teacher"]["dir"] = "runs/teachers_resnet"
    assert config.load(write(tmp_path, yaml.safe_dump(r))).teacher.dir == "runs/teachers_resnet"


@pytest.mark.parametrize("name", ["my method", "a/b", "_x", "gradmix:v2"])
def test_method_names_must_make_folders_and_stage_names(name):
    r = raw()
    r["methods"][name] = {"mixer": "none"}
    refused(r, f"methods.{name}: method name {name!r}", "letters, digits")
    r = raw()
    r["contrastive"]["methods"][name] = {"view": "none"}
    refused(r, f"contrastive.methods.{name}: method name")


@pytest.mark.parametrize("value, expect", [('["stage3"]', ["stage3"]), ("[stage2, stage3]", ["stage2", "stage3"]),
                                           ("stage3", ["stage3"]), ("", []), (("stage3",), ["stage3"])])
def test_list_parameters_accept_their_text(value, expect):
    from gradmix.checks import list_parameter
    assert list_parameter("stages", value) == expect


def test_a_list_parameter_that_is_no_list_says_how_to_pass_one():
    from gradmix.checks import list_parameter
    with pytest.raises(ConfigError, match=r"stages: '\{a: 1\}' is not a list; valid: a list such as \['stage3'\].*-y"):
        list_parameter("stages", "{a: 1}")
    with pytest.raises(ConfigError, match="stages: 3 is not a list"):
        list_parameter("stages", 3)


def test_explore_takes_stages_as_papermill_passes_them(tmp_path):
    """Regression: papermill -p stages '["stage3"]' gives the text; it used to fail as
    "unknown stage '['"."""
    from gradmix import explore, gallery, trainers

    cfg = config.replace(config.load(ROOT / "params.yaml", smoke=True), data={"max_train": 48, "image_size": 12})
    root = tmp_path / "runs"
    trainers.train_method(cfg, "gradmix", root)
    run = root / "gradmix" / "split0-seed0"
    assert gallery.gallery_options(run, stages='["stage3"]').stages == ("stage3",)
    fig = explore.explore_figure(root, "gradmix", stages='["stage3"]', n_images=2)
    text = " ".join([fig.texts[0].get_text() if fig.texts else ""] + [a.get_title() for a in fig.axes])
    assert "stage3" in text and "stage2" not in text


def test_an_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML) reads `lr: 1e-3` as the string "1e-3"; YAML 1.2, DVC's `-S` and every user read
    it as 0.001. The params file, --set overrides and list parameters all read it as a number."""
    from gradmix.checks import list_parameter, load_yaml

    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.05", "  lr: 5e-2", 1)
    assert "lr: 5e-2" in text
    cfg = config.load(write(tmp_path, text))
    assert cfg.train.lr == 0.05 and isinstance(cfg.train.lr, float)
    assert config.load(ROOT / "params.yaml", overrides=["train.weight_decay=1E-4"]).train.weight_decay == 1e-4
    with pytest.raises(ConfigError, match=r"train.lr: -1.0 is out of range"):     # read as a number, then checked
        config.load(ROOT / "params.yaml", overrides=["train.lr=-1e+0"])
    assert load_yaml("[1e6, 2.5e-3, -3E2, 1_0e1, 1e, e5, 10]") == [1e6, 2.5e-3, -300.0, 100.0, "1e", "e5", 10]
    assert list_parameter("x", "[1e-2]") == [0.01]
