"""Options every command group shares, declared once."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StoreArg = Annotated[Path, typer.Argument(help="Store directory.")]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for another writer to finish (default: refuse).")]
