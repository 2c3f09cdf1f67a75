"""``python -m gradmix``: the command line (gradmix.cli)."""
from .cli import main

raise SystemExit(main())
