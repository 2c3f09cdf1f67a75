"""The ``gradmix`` command line (``python -m gradmix`` or the ``gradmix`` console script).

Subcommands, each with ``--help``:

* ``train --method M [M ...] [--split K] [--seed S] --out DIR [--params F] [--set key=value ...]``: one
  run (``DIR/<method>/split<k>-seed<s>/``), or every split × seed of the configuration under ``DIR``;
  several methods are one batch of jobs with ``train.launcher`` local or slurm (gradmix.launcher);
* ``evaluate RUN_DIR ...`` / ``evaluate --runs DIR``: open-set metrics as a table, or ``--json``;
* ``download ...``: fetch, verify and prepare datasets (:func:`gradmix.prepare.main`);
* ``config [--params F] [--set key=value ...]``: the effective configuration as YAML;
* ``check-results FRESH REFERENCE [--tolerance T] [--se-factor F]``: do fresh metrics reproduce a reference
  (:mod:`gradmix.reproduce`; ``make check-results``)?

``--set`` values are YAML (``--set data.splits=[0,1]``) and always win, over the profile too
(:func:`gradmix.config.load`). Ordinary errors (a bad value, a missing or corrupt file, a failed
download) print one line on stderr and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import config

EXIT_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (status 2), like the command's other errors."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def train_runs(cfg: config.Config, method: str, out_root: str | Path, split: int | None = None,
               seed: int | None = None) -> list[Path]:
    """Train ``method`` into ``out_root/<method>/split<k>-seed<s>/``: every split × seed of ``cfg``, or only
    ``split`` and/or ``seed``; returns the run directories.

    The one place the command line trains: any method of ``methods`` or ``contrastive.methods`` through
    :func:`gradmix.trainers.train_method` (cross-entropy, distilled student, contrastive), and
    ``teacher``, the distillation teacher (:func:`gradmix.teacher.train_teachers`, into
    ``out_root/teacher``). Raises ConfigError for an unknown method or an invalid split or seed, and
    FileNotFoundError when a distilled student's teacher is missing, before any training.
    """
    from . import teacher, trainers
    from .plan import method_kind

    kind = method_kind(cfg, method)
    sub = subset(cfg, split, seed)
    if kind == "teacher":
        return teacher.train_teachers(sub, Path(out_root) / "teacher")
    return trainers.train_method(sub, method, out_root)


def subset(cfg: config.Config, split: int | None, seed: int | None) -> config.Config:
    """``cfg`` cut to ``split`` and/or ``seed`` (None: all of them), validated (ConfigError if invalid)."""
    if seed is not None and seed < 0:
        raise config.ConfigError(f"--seed {seed}: a seed is an integer >= 0")
    try:
        return config.replace(cfg, data={"splits": list(cfg.data.splits) if split is None else [split]},
                              train={"seeds": list(cfg.train.seeds) if seed is None else [seed]})
    except config.ConfigError as e:
        raise config.ConfigError(f"--split {split}: {e}") from None


def _load(args) -> config.Config:
    return config.load(args.params, smoke=args.smoke, overrides=args.set)


def cmd_train(args) -> int:
    from . import trainers
    from .plan import announce, method_kind
    from .rundir import planned_runs

    cfg = _load(args)
    methods = list(dict.fromkeys(args.method))
    for m in methods:
        method_kind(cfg, m)                            # an unknown method or split fails before anything prints
    sub = subset(cfg, args.split, args.seed)
    if len(methods) > 1 and "teacher" in methods:
        raise config.ConfigError("--method teacher: train the distillation teacher on its own (its students "
                                 "need it finished first)")
    announce(cfg, methods, "gradmix train", sub.data.splits, sub.train.seeds, args.out)
    if len(methods) == 1:
        dirs = train_runs(cfg, methods[0], args.out, args.split, args.seed)
    else:                                              # one batch of jobs across the methods (train.launcher)
        trainers.train_methods(sub, methods, args.out)
        dirs = [Path(args.out) / m / run for m in methods for run in planned_runs(sub)]
    print("\n".join(str(d) for d in dirs))
    return 0


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def cmd_evaluate(args) -> int:
    import pandas as pd

    from . import evaluate

    from .scores import SCORES

    scores = tuple(args.scores)
    for s in scores:
        config.check_choice("--scores", s, SCORES)
    if bool(args.run_dirs) == bool(args.runs):
        raise config.ConfigError("give either run directories or --runs DIR" +
                                 (", not both" if args.runs else ""))
    if args.runs:
        df = evaluate.evaluate_runs(args.runs, args.methods or None, scores)
    else:
        df = pd.DataFrame([evaluate.evaluate_run(d, scores) for d in args.run_dirs])
    summary = evaluate.aggregate(df)
    if args.json:
        rows = [{k: _finite(v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                for r in df.to_dict(orient="records")]
        print(json.dumps({"runs": rows, "metrics": summary}, indent=2, allow_nan=False, default=_finite))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4f}".format):
        print(df.to_string(index=False))
        if len(df) > df.groupby(["dataset", "method"]).ngroups:      # several runs per method: their mean
            metrics = [c for c in df.columns if c not in evaluate.ID_COLUMNS]
            print("\nmean over splits and seeds:")
            print(df.groupby(["dataset", "method"], sort=False)[metrics].mean().to_string())
    return 0


def cmd_config(args) -> int:
    import yaml

    cfg = _load(args)
    for note in cfg.overridden:
        print(f"# {note}")
    print(yaml.safe_dump(config.yaml_values(cfg.to_dict()), sort_keys=False, default_flow_style=None,
                         allow_unicode=True, width=100), end="")
    return 0


def cmd_check_results(args) -> int:
    from . import reproduce

    fresh, reference = reproduce.read_metrics(args.fresh), reproduce.read_metrics(args.reference)
    problems = reproduce.compare(fresh, reference, args.tolerance, se_factor=args.se_factor)
    diff, where = reproduce.largest_difference(fresh, reference)
    for p in problems:
        print(f"NOT REPRODUCED {p}")
    print(f"{'not reproduced' if problems else 'reproduced'}: largest |difference| of a mean {diff:.5f}"
          f"{f' ({where})' if where else ''}; allowed: {args.se_factor} standard errors of the reference mean, "
          f"at least {args.tolerance} ({args.fresh} vs {args.reference})")
    return 1 if problems else 0


def cmd_download(args) -> int:
    from .prepare import main

    return main(args.args)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set train.epochs=3 or --set data.splits=[0,1] (YAML "
                        "values; repeatable; wins over params.yaml and the profile; --set profile.name=... "
                        "chooses the profile)")
    p.add_argument("--smoke", action="store_true",
                   help="apply params.yaml's smoke section first (one split, one epoch, few images)")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="gradmix", description="GradMix and open-set recognition: train, evaluate, download "
                 "data, show the configuration. `gradmix COMMAND --help` describes each command.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train methods: one run, or every split x seed",
                       description="Train METHOD into OUT/<method>/split<k>-seed<s>/: every split and seed of the "
                       "configuration, or only --split and/or --seed. METHOD is a key of params.yaml `methods` "
                       "(cross-entropy or distilled student), of `contrastive.methods`, or `teacher` (the "
                       "distillation teacher, into OUT/teacher/). Prints the device and the plan first.")
    p.add_argument("--method", required=True, nargs="+", metavar="METHOD",
                   help="the method(s) to train; several: with --set train.launcher=local or slurm their runs "
                        "are one batch of jobs (docs/cluster.md)")
    p.add_argument("--split", type=int, help="only this split (default: every split of data.splits)")
    p.add_argument("--seed", type=int, help="only this seed (default: every seed of train.seeds)")
    p.add_argument("--out", required=True, type=Path, help="the folder that receives <method>/split<k>-seed<s>/")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="open-set metrics of run directories, as a table or JSON",
                       description="Accuracy, AUROC, OSCR and FPR@95 of each run (gradmix.evaluate), and their "
                       "mean over splits and seeds.")
    p.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories")
    p.add_argument("--runs", type=Path, help="a folder of <method>/<run>/ directories (e.g. runs)")
    p.add_argument("--methods", nargs="+", help="with --runs: only these methods, in this order")
    p.add_argument("--scores", nargs="+", default=["msp", "mls"], help="scores of logit runs (default: msp mls)")
    p.add_argument("--json", action="store_true", help='print {"runs": [...], "metrics": {...}} as JSON')
    p.set_defaults(func=cmd_evaluate)

    from .reproduce import SE_FACTOR, TOLERANCE

    p = sub.add_parser("check-results", help="do fresh metrics reproduce a reference within a tolerance?",
                       description="Compare FRESH with REFERENCE (two metrics.json files): every dataset, method "
                       "and metric of the reference must be in FRESH with the same n and a mean within "
                       "--se-factor standard errors of the reference mean, at least --tolerance (gradmix.reproduce; docs/reproducibility.md says what reproduces bit for bit "
                       "and what within the tolerance). Exit status 0: reproduced, 1: not, 2: an error.")
    p.add_argument("fresh", type=Path, help="the fresh metrics.json")
    p.add_argument("reference", type=Path, help="the reference metrics.json (e.g. the committed one)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"the smallest allowed |difference| of a mean, in metric units (default {TOLERANCE})")
    p.add_argument("--se-factor", type=float, default=SE_FACTOR,
                   help=f"allowed |difference| in standard errors (std/sqrt(n)) of the reference mean (default "
                        f"{SE_FACTOR}: twice the largest shift a thread-count change caused, docs/reproducibility.md)")
    p.set_defaults(func=cmd_check_results)

    p = sub.add_parser("download", help="fetch, verify and prepare datasets (gradmix download --help)",
                       add_help=False, description="Arguments go to python -m gradmix.prepare.")
    p.add_argument("args", nargs=argparse.REMAINDER, help="e.g. --profile paper, --list, --help")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("config", help="print the effective configuration as YAML",
                       description="Print the configuration that will run, as YAML: params.yaml, its profile, "
                       "explicit values (changed from the defaults, or --set) over the profile. Lines starting "
                       "with # say which explicit values override the profile.")
    _common(p)
    p.set_defaults(func=cmd_config)
    return ap


ERRORS = (ValueError, OSError)   # ConfigError and corrupt files are ValueErrors; missing files OSErrors


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors a user meets in ordinary use, each with a message that names the problem: bad
    configuration and corrupt files (ValueError), missing files (OSError), failed downloads, a run
    another process is writing, a diverged run, runs failed in their jobs, code changed under waiting
    jobs. The CLI prints them as one line; anything else is a bug and keeps its traceback."""
    from .checkpoint import DivergedError, RunLockedError
    from .download import DownloadError
    from .launcher import CodeChangedError, JobsFailedError

    return (*ERRORS, DownloadError, RunLockedError, DivergedError, JobsFailedError, CodeChangedError)


def main(argv=None) -> int:
    """Run one subcommand; the errors of :func:`expected_errors` -> one line on stderr and status 2."""
    from .launcher import JobsFailedError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["download"]:             # every other argument is gradmix.download's (argparse's
        args = argparse.Namespace(command="download", func=cmd_download, args=argv[1:])   # REMAINDER drops options)
    else:
        try:
            args = parser().parse_args(argv)
        except SystemExit as e:              # --help (0) or a usage error (2, one line printed)
            return e.code
    try:
        return args.func(args)
    except expected_errors() as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"gradmix {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"gradmix {args.command}: interrupted", file=sys.stderr)
        return 130
