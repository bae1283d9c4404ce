"""The `aetheris` command. Each subcommand lives beside the code it drives."""

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


@app.command("eval")
def eval_cmd(
    models: Annotated[list[str], typer.Argument(help="HF causal LMs: hub ids or local directories.")],
    tasks: str = typer.Option(
        "xcopa,mgsm_direct,flores_bpb",
        help="Comma-separated: xcopa, xcopa_gen, mgsm_direct, mgsm_cot, flores_bpb, tools.",
    ),
    langs: str = typer.Option("", help="Comma-separated language codes (default: every task language)."),
    limit: int = typer.Option(None, help="First N items per task and language."),
    data_dir: str = typer.Option(
        None, help="Folder with the original benchmark files (default: $AETHERIS_DATA_DIR, else the hub)."
    ),
    out: str = typer.Option("results", help="Output folder: one JSON per model, plus cache/."),
    batch_size: int = typer.Option(8, help="Sequences per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    chat_template: bool = typer.Option(False, help="Chat-format generative prompts."),
    max_new_tokens: int = typer.Option(None, help="Override generative tasks' token budget."),
) -> None:
    """Evaluate models on the multilingual tasks; resumes from the per-item cache."""
    import os
    from pathlib import Path

    from aetheris.eval.runner import run

    data = data_dir or os.environ.get("AETHERIS_DATA_DIR")
    try:
        results = run(
            models,
            tasks.split(","),
            Path(out),
            langs=[c for c in langs.split(",") if c.strip()] or None,
            data_dir=Path(data) if data else None,
            limit=limit,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            chat_template=chat_template,
            max_new_tokens=max_new_tokens,
        )
    except (KeyError, ValueError, ImportError, FileNotFoundError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    for r in results:
        typer.echo(f"{r['model_name']}: {r['path']}")
        for name, task in r["tasks"].items():
            scores = ", ".join(f"{k}={v['score']:.4f}" for k, v in task["languages"].items())
            typer.echo(f"  {name} ({task['metric']}): {scores}")


if __name__ == "__main__":
    app()
