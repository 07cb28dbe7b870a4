"""`tnstore capture` and `tnstore demo`."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import WaitOpt


def register(app: typer.Typer) -> None:
    app.command("capture")(capture)
    app.command("demo")(demo)


def capture(
    store: str = typer.Option(..., "--store", help="Store directory (created if missing, appended to otherwise)."),
    corpus: Path = typer.Option(..., "--corpus", help="JSONL, CSV or Parquet corpus."),
    model: str = typer.Option("gemma-3-270m", "--model", help="gemma-3-270m, smollm2-135m, tiny-<family>, a .gguf, a folder or an HF id."),
    split: str = typer.Option("train", "--split", help="Split label stored with every sentence."),
    kind: Optional[str] = typer.Option(None, "--kind", help="parallel | nonparallel | mono (default: from the file's shape)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Capture only the first N records, in file order."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    device_map: Optional[str] = typer.Option(None, "--device-map", help="auto: split a model larger than one GPU "
                                             "over every GPU (accelerate); also balanced, sequential."),
    dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32 | bfloat16 | float16."),
    storage_dtype: str = typer.Option("float16", "--storage-dtype", help="Stored dtype: float16 | float32."),
    chunk_rows: int = typer.Option(256, "--chunk-rows", min=1, help="Rows per Zarr chunk; also the unit a resumed capture restarts from."),
    wait: WaitOpt = 0.0,
    ablate: Optional[str] = typer.Option(None, "--ablate", help="Capture the whole corpus with this neuron set deactivated (a neuron_sets name or transfer_neurons set_id of the store); `tnstore replay` re-runs only the L2 side of sentences already captured."),
    ablate_scope: str = typer.Option("last", "--ablate-scope", help="last: zero at the last token only; all: at every position."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run the model once over a corpus and write last-token activations into the store.

    On several GPUs or machines: torchrun --nproc-per-node N -m tnstore capture ... (the ranks split the run)."""
    from tnstore.capture.api import capture_corpus

    result = capture_corpus(
        store=store, corpus=corpus, model=model, split=split, kind=kind, limit=limit, batch_size=batch_size,
        device=device, dtype=dtype, storage_dtype=storage_dtype, wait_seconds=wait, progress=not quiet,
        chunk_rows=chunk_rows, ablate=ablate, ablate_scope=ablate_scope, device_map=device_map,
        command=shlex.join(["tnstore"] + sys.argv[1:]),
    )
    if result.rank == 0:  # under torchrun, one line for the run, not one per rank
        typer.echo(result.describe())


def demo(
    store: Path = typer.Option(Path("demo-store"), "--store", help="Where the demo store goes."),
    model: str = typer.Option("gemma-3-270m", "--model"),
) -> None:
    """The main job on the built-in default: capture the demo corpus with Gemma-3-270M, then query the store."""
    from tnstore.cli.demo import run_demo

    run_demo(store, model, echo=typer.echo)
