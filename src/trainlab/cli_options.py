"""Command-line options shared by the command modules (studies, reports, serving).

Kept apart from the modules that register commands, so that each of those imports on its own:
``cli`` imports every command module, and they must not need each other half-initialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

STORAGE_HELP = "study store URL (default: TRAINLAB_STORAGE, else sqlite in the runs folder)"
StorageOption = Annotated[str | None, typer.Option("--storage", help=STORAGE_HELP)]
RunsDirOption = Annotated[
    Path, typer.Option("--runs-dir", help="where run folders go: RUNS_DIR/STUDY/trial-NNNN")
]
