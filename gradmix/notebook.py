"""Run a notebook of ``notebooks/`` as a pipeline stage (what ``dvc.yaml`` calls), with papermill.

    python -m gradmix.notebook NOTEBOOK OUTPUT [-p NAME VALUE]...

Compared with the ``papermill`` command it adds three things a long stage needs:

* **Live output.** The kernel's stdout and stderr (the stage's plan, each run's progress and
  per-epoch lines) are written to this process's stdout and stderr as the cells run, so ``dvc repro``
  and ``dvc exp run`` show them instead of minutes or hours of silence.
* **An executed notebook that is complete or absent.** It is written to ``<name>.part.ipynb``
  beside ``OUTPUT`` while the notebook runs and renamed to ``OUTPUT`` only when every cell ran; a
  killed or failed stage leaves the ``.part.ipynb`` (open it to see the error), never an ``OUTPUT``
  that looks finished. A stale ``OUTPUT`` is removed before the run starts.
* **No "Kernel is running over TCP without encryption" warning.** The kernel's connection uses
  CurveZMQ transport encryption (jupyter_client's ``KernelManager.transport_encryption``) where
  pyzmq supports it, which is what that ipykernel warning asks for. Where it does not, the warning
  is printed once per stage and is harmless: papermill talks to its own kernel over localhost.

``-p`` values are read as papermill reads them: ``True``/``False``/``None``, an int, a float, else a
string. Exit status 1 when a cell fails (the error is printed), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def parse_value(text: str):
    """papermill's ``-p`` typing: True/False/None, int, float, else the string itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text


def partial_path(output: Path) -> Path:
    """Where ``output`` is written until it is complete: ``<stem>.part.ipynb`` (papermill and Jupyter
    want the .ipynb suffix)."""
    return output.with_name(f"{output.stem}.part{output.suffix}")


def kernel_config():
    """traitlets Config that turns on CurveZMQ transport encryption, where jupyter_client and pyzmq can."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    cfg = Config()
    if zmq.has("curve") and "transport_encryption" in KernelManager.class_trait_names():
        cfg.KernelManager.transport_encryption = "auto"
    return cfg


def run(notebook: str | Path, output: str | Path, parameters: dict | None = None) -> Path:
    """Execute ``notebook`` with ``parameters`` into ``output`` (via ``<name>.part.ipynb``, see the module
    docstring), streaming the kernel's output. Raises papermill's PapermillExecutionError when a cell
    fails, FileNotFoundError when ``notebook`` does not exist."""
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook {notebook}")
    part = partial_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    pm.execute_notebook(str(notebook), str(part), parameters=parameters or {}, progress_bar=False,
                        stdout_file=sys.stdout, stderr_file=sys.stderr, config=kernel_config(),
                        shutdown_kernel="immediate")   # the notebook is saved: no graceful wait
    os.replace(part, output)
    return output


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradmix.notebook", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", help="the notebook to run, e.g. notebooks/train.ipynb")
    ap.add_argument("output", help="the executed copy, e.g. results/notebooks/train_erm.ipynb")
    ap.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter of the notebook's `parameters` cell (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")   # papermill's warnings, not its info
    from papermill.exceptions import PapermillExecutionError

    params = {name: parse_value(value) for name, value in args.parameters}
    print(f"{args.notebook} -> {args.output}" + "".join(f" {k}={v!r}" for k, v in params.items()), flush=True)
    try:
        run(args.notebook, args.output, params)
    except PapermillExecutionError as e:
        print(f"{e}\n{args.notebook} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
              f"the executed notebook is {partial_path(Path(args.output))}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"python -m gradmix.notebook: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
