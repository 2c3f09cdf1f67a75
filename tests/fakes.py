"""Run directories made by hand, sealed as finished, for the tests of what reads runs (evaluate, figures,
the command line, the experiment files): gradmix reads only runs with a valid ``complete.json``."""
from pathlib import Path

from gradmix import rundir


def seal(path: Path, run: dict) -> Path:
    """Add what a finished run has besides ``config.json`` and ``scores.npz`` (an empty ``model.pt`` and a
    header-only ``log.csv`` unless present; nothing here reads them) and write its ``complete.json``."""
    path = Path(path)
    if not (path / "model.pt").exists():
        (path / "model.pt").write_bytes(b"")
    if not (path / "log.csv").exists():
        (path / "log.csv").write_text("epoch\n")
    rundir.write_marker(path, run)
    return path
