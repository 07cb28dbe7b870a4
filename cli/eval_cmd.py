"""`tnstore eval qa|score|mc|generate|show`: thin shells over tnstore.eval (generation and downstream evaluation
under deactivation)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tnstore.cli.options import FormatOpt, ResultsOpt, StoreArg, WaitOpt, store_at

eval_app = typer.Typer(name="eval", no_args_is_help=True,
                       help="Generation and downstream evaluation (MKQA QA, MMLU-ProX, open-ended) under deactivation.")

ModelOpt = typer.Option(None, "--model", help="Default: the store's own model (another spec must name the same weights).")
ConditionsOpt = typer.Option("none", "--conditions", help="Comma-separated: none and/or stored neuron sets "
                             "(neuron_sets names or transfer_neurons set_ids).")
PositionsOpt = typer.Option("prompt", "--positions", help="Deactivation scope: prompt (every prompt position at "
                            "prefill), prompt-last, generated (generated tokens only), all.")
DeviceOpt = typer.Option("cpu", "--device", help="auto | cpu | cuda | mps")
DtypeOpt = typer.Option("float32", "--dtype", help="Compute dtype: float32 | bfloat16 | float16.")
QuietOpt = typer.Option(False, "--quiet", help="No progress bar.")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _stops(text: str | None) -> list[str]:
    """--stop: comma-separated exact strings (spaces kept); \\n and \\t stand for a line break and a tab."""
    if not text:
        return []
    return [part.replace("\\n", "\n").replace("\\t", "\t") for part in text.split(",") if part]


@eval_app.command("qa")
def qa(
    store: StoreArg,
    results: ResultsOpt = None,
    data: Path = typer.Option(..., "--data", help="MKQA release file (.jsonl or .jsonl.gz)."),
    langs: str = typer.Option(..., "--langs", help="Comma-separated MKQA language codes, e.g. ja,nl,ko,it."),
    conditions: str = ConditionsOpt,
    positions: str = PositionsOpt,
    max_new_tokens: int = typer.Option(10, "--max-new-tokens"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions (after skipping)."),
    batch_size: int = typer.Option(8, "--batch-size"),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt with a {query} placeholder (default: "
                                           "the authors' \"{query}? \" + the language's answer label)."),
    chat_template: bool = typer.Option(False, "--chat-template", help="Wrap each prompt in the tokenizer's chat template."),
    keep_all: bool = typer.Option(False, "--keep-all", help="Keep long_answer and unanswerable questions."),
    stop: Optional[str] = typer.Option(None, "--stop", help="Comma-separated stop strings, exact (\\n = line break)."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt, wait: WaitOpt = 0.0,
    quiet: bool = QuietOpt,
) -> None:
    """MKQA zero-shot QA under each condition: eval_generations, eval_qa, eval_qa_summary."""
    from tnstore.cli.render import render
    from tnstore.eval.question_answering import qa as run_qa

    result = run_qa(
        store_at(store, results), data, langs=_list(langs), conditions=_list(conditions), positions=positions,
                    max_new_tokens=max_new_tokens, limit=limit, batch_size=batch_size, template=template,
                    chat_template=chat_template, keep_all=keep_all, stop_strings=_stops(stop), model=model,
                    device=device, dtype=dtype, wait_seconds=wait, progress=not quiet)
    typer.echo(f"eval {result.eval_id}: {result.generated} questions answered, {result.resumed} already stored, "
               f"in {result.seconds:.1f} s (tables eval_generations, eval_qa, eval_qa_summary)")
    shown = result.summary_arrow.select(["lang", "condition", "n_questions", "mean_em", "mean_f1", "n_base_gt_0_5",
                                         "base_f1_gt_0_5", "delta_f1_gt_0_5", "n_base_gt_0_8", "delta_f1_gt_0_8"])
    typer.echo(render(shown, "table", max_rows=1000), nl=False)


@eval_app.command("score")
def score(
    data: Path = typer.Option(..., "--data", help="MKQA release file (.jsonl or .jsonl.gz)."),
    predictions: Path = typer.Option(..., "--predictions", help="JSONL: example_id, prediction, binary_answer, "
                                     "no_answer_prob (MKQA's official predictions format)."),
    lang: str = typer.Option(..., "--lang", help="MKQA language code of the predictions."),
    fmt: FormatOpt = "table",
    max_rows: int = typer.Option(50, "--max-rows", help="Rows shown by --format table."),
) -> None:
    """Score anyone's predictions with MKQA's official normalisation (no model, no store)."""
    from tnstore.cli.parsing import choice
    from tnstore.cli.render import render
    from tnstore.eval.question_answering import score as run_score

    choice(fmt, ("table", "csv", "json"), "--format")
    result = run_score(data, predictions, lang)
    typer.echo(render(result.rows_arrow, fmt, max_rows), nl=False)
    if fmt == "table":
        missing = f"; {result.n_missing} questions of the data have no prediction" if result.n_missing else ""
        typer.echo(f"mean em {result.mean_em:.4f}  mean f1 {result.mean_f1:.4f} over {result.rows_arrow.num_rows} "
                   f"predictions ({result.n_answerable} answerable: em {result.answerable_em:.4f}, "
                   f"f1 {result.answerable_f1:.4f}){missing}")


@eval_app.command("mc")
def mc(
    store: StoreArg,
    results: ResultsOpt = None,
    data: Path = typer.Option(..., "--data", help="MMLU-ProX records (JSONL) in one language."),
    lang: str = typer.Option(..., "--lang", help="The records' language (en, ja, ko, zh, it, nl)."),
    conditions: str = ConditionsOpt,
    method: str = typer.Option("generate", "--method", help="generate (k-shot chain of thought, the paper's) | "
                               "loglik (rank the option letters; cheap)."),
    shots: int = typer.Option(5, "--shots"),
    fewshot: Optional[Path] = typer.Option(None, "--fewshot", help="Records to draw the examples from (the validation "
                                           "split; default: the other questions of --data, same subject)."),
    positions: str = PositionsOpt,
    max_new_tokens: int = typer.Option(512, "--max-new-tokens"),
    limit: Optional[int] = typer.Option(None, "--limit"),
    batch_size: int = typer.Option(4, "--batch-size"),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt, wait: WaitOpt = 0.0,
    quiet: bool = QuietOpt,
) -> None:
    """MMLU-ProX multiple choice under each condition: eval_mc, eval_mc_summary (and eval_generations)."""
    from tnstore.cli.render import render
    from tnstore.eval.multiple_choice import mc as run_mc

    result = run_mc(
        store_at(store, results), data, lang, conditions=_list(conditions), method=method, shots=shots, fewshot=fewshot,
                    positions=positions, max_new_tokens=max_new_tokens, limit=limit, batch_size=batch_size,
                    model=model, device=device, dtype=dtype, wait_seconds=wait, progress=not quiet)
    typer.echo(f"eval {result.eval_id}: {result.generated} questions answered, {result.resumed} already stored, "
               f"in {result.seconds:.1f} s (tables eval_mc, eval_mc_summary)")
    shown = result.summary_arrow.select(["condition", "subject", "n_questions", "n_correct", "accuracy", "n_unanswered"])
    typer.echo(render(shown, "table", max_rows=1000), nl=False)


@eval_app.command("generate")
def generate(
    store: StoreArg,
    results: ResultsOpt = None,
    prompts: Path = typer.Option(..., "--prompts", help="JSONL: {id, lang, prompt} or {id, <lang>: <prompt>, ...}."),
    langs: str = typer.Option(..., "--langs", help="Comma-separated languages of the prompts to run."),
    conditions: str = ConditionsOpt,
    positions: str = PositionsOpt,
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N prompts per language."),
    batch_size: int = typer.Option(8, "--batch-size"),
    chat_template: bool = typer.Option(False, "--chat-template"),
    stop: Optional[str] = typer.Option(None, "--stop", help="Comma-separated stop strings, exact (\\n = line break)."),
    model: Optional[str] = ModelOpt, device: str = DeviceOpt, dtype: str = DtypeOpt, wait: WaitOpt = 0.0,
    quiet: bool = QuietOpt,
) -> None:
    """Open-ended generation under each condition: eval_generations, eval_gen_metrics (language, distinct-n, ...)."""
    from tnstore.cli.render import render
    from tnstore.eval.open_ended import generate as run_generate

    result = run_generate(
        store_at(store, results), prompts, langs=_list(langs), conditions=_list(conditions), positions=positions,
                          max_new_tokens=max_new_tokens, limit=limit, batch_size=batch_size,
                          chat_template=chat_template, stop_strings=_stops(stop), model=model, device=device,
                          dtype=dtype, wait_seconds=wait, progress=not quiet)
    typer.echo(f"eval {result.eval_id}: {result.generated} outputs generated, {result.resumed} already stored, "
               f"in {result.seconds:.1f} s (tables eval_generations, eval_gen_metrics); see one prompt's outputs "
               f"with `tnstore eval show {store} ID`")
    typer.echo(render(result.summary_arrow, "table", max_rows=1000), nl=False)


@eval_app.command("show")
def show(
    store: StoreArg,
    results: ResultsOpt = None,
    item_id: str = typer.Argument(..., help="The prompt's or question's id (item_id in eval_generations)."),
    lang: Optional[str] = typer.Option(None, "--lang"),
    eval_id: Optional[str] = typer.Option(None, "--eval-id", help="Default: every eval that generated for this id."),
    width: int = typer.Option(60, "--width", help="Column width of each condition's output."),
) -> None:
    """One prompt's outputs under every condition, side by side."""
    from tnstore.eval.show import side_by_side

    typer.echo(side_by_side(store_at(store, results), item_id, lang=lang, eval_id=eval_id, width=width), nl=False)
