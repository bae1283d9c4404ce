"""The `aetheris` command. Each subcommand lives beside the code it drives."""

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from aetheris.compress.cli import compress_cmd as _compress_cmd
from aetheris.eval.tasks import TASKS
from aetheris.languages import print_table as _languages_table

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.command()
def version() -> None:
    """Print the installed version."""
    from aetheris import __version__

    typer.echo(__version__)


app.command("languages", help="List the language registry (--tiny-aya-only for Tiny Aya's 70).")(
    _languages_table
)


@app.command("report")
def report(
    results: Annotated[list[Path], typer.Argument(help="Results JSON files; the first is the teacher.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    teacher: Annotated[Path | None, typer.Option(help="Teacher results (else the first file).")] = None,
    level: Annotated[str, typer.Option(help="Group languages by 'family' or 'group'.")] = "family",
    tokenizer: Annotated[
        list[str] | None,
        typer.Option(
            help="Tokenizer (local dir or hub id) for fertility; repeatable. "
            "Default: the teacher's model folder when it holds a tokenizer."
        ),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data (holds flores_sib200/).")] = None,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    n_perm: Annotated[int, typer.Option(help="Permutations for the family test.")] = 10000,
    seed: int = 0,
) -> None:
    """Equity report (report.md, report.html, results.json) of students against their teacher."""
    from aetheris.report.cli import run_report

    run_report(
        results,
        out,
        teacher=teacher,
        level=level,
        tokenizer=tokenizer or [],
        data_dir=data_dir,
        n_boot=n_boot,
        n_perm=n_perm,
        seed=seed,
    )


@app.command("validate-tools")
def validate_tools(paths: list[str]) -> None:
    """Check tool-calling JSONL files: the item format, and every gold call against its tool's schema."""
    from aetheris.toolcall.format import ItemError, read_items

    failed = False
    for path in paths:
        try:
            items = read_items(path)
        except (ItemError, OSError) as e:
            typer.echo(f"FAIL {e}", err=True)
            failed = True
            continue
        typer.echo(f"ok   {path}: {len(items)} items")
    if failed:
        raise typer.Exit(1)


teacher_app = typer.Typer(no_args_is_help=True, help="Load and inspect teacher models.")
app.add_typer(teacher_app, name="teacher")
app.command("compress")(_compress_cmd)


@teacher_app.command("info")
def teacher_info(
    source: str = typer.Argument(..., help="Embedded name, .gguf file, model directory or hub id."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    cache_dir: str = typer.Option(None, help="GGUF cache (default $AETHERIS_CACHE/teachers)."),
) -> None:
    """Print what the student initialiser will read from a teacher."""
    from aetheris.teacher import introspect, load_teacher
    from aetheris.teacher.summary import print_spec

    loaded = load_teacher(source, dtype=dtype, cache_dir=cache_dir)
    cached = " (from cache)" if loaded.from_cache else ""
    typer.echo(f"loaded {loaded.source} in {loaded.seconds:.1f}s{cached}")
    print_spec(introspect(loaded.model))


@app.command("eval")
def eval_cmd(
    models: Annotated[list[str], typer.Argument(help="HF causal LMs: hub ids or local directories.")],
    tasks: str = typer.Option(
        "xcopa,mgsm_direct,flores_bpb",
        help=f"Comma-separated: {', '.join(TASKS)}.",
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
            failures = Counter(
                i["category"] for v in task["languages"].values() for i in v["items"] if i.get("category")
            )
            if failures:  # tool calling: why the calls failed, over all languages
                typer.echo("    failures: " + ", ".join(f"{c}={n}" for c, n in failures.most_common()))


@app.command("data")
def data(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="JSONL/Parquet files, folders, or hf:<dataset id>[:split]. Default: the embedded corpus."
        ),
    ] = None,
    tau: Annotated[float, typer.Option(help="Mixture temperature: p(lang) ∝ n_lang^tau.")] = 0.3,
    chat: Annotated[bool, typer.Option(help="With no sources: the embedded chat corpus.")] = False,
) -> None:
    """Rows per language, mixture weights and skipped rows (by reason) of training sources."""
    from aetheris.data.cli import print_data_summary

    print_data_summary(list(sources or []), tau=tau, chat=chat)


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Run config (YAML).")]) -> None:
    """Validate a distillation run config; every bad key is named."""
    from aetheris.distill.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{path}: ok (teacher {cfg.teacher.name}, student {cfg.student.layout}, output {cfg.output_dir})"
    )


@app.command("distill")
def distill(
    config: Annotated[Path, typer.Argument(help="Run config (YAML), e.g. configs/demo.yaml.")],
    stage: Annotated[str, typer.Option(help="init, align, kd, sft or all.")] = "all",
    resume: Annotated[bool, typer.Option(help="Continue a killed stage from its last checkpoint.")] = False,
) -> None:
    """Distil a teacher into an Aetheris student: init -> align -> kd -> sft."""
    from aetheris.distill.config import ConfigError, load_config
    from aetheris.distill.pipeline import run_stages

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"student written to {run_stages(cfg, stage=stage, resume=resume)}")
