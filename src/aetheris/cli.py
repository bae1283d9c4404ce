"""The `aetheris` command. Each subcommand lives beside the code it drives."""

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from aetheris.arbitrage.cli import arbitrage_cmd as _arbitrage_cmd
from aetheris.compress.cli import compress_cmd as _compress_cmd
from aetheris.errors import BadValueError, MissingPathError, UserError
from aetheris.eval.tasks import TASKS
from aetheris.languages import print_table as _languages_table
from aetheris.merge.cli import merge_cmd as _merge_cmd
from aetheris.study.cli import study_cmd as _study_cmd
from aetheris.teacher.embedded import EMBEDDED_TEACHERS

EVAL_DTYPES = ("auto", "native", "float32", "bfloat16", "float16")


class _OneLineErrors(TyperGroup):
    """Every subcommand runs inside `invoke`: a UserError raised anywhere below ends as one line
    `Error: ...` on stderr with exit code 2, like a bad option; other errors are bugs and keep
    their traceback."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except UserError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(2) from None
        finally:  # an invocation inside another program (tests) leaves its logging as it was
            configure_logging(None)


# rich_markup_mode=None: click prints usage errors as plain lines ending with `Error: ...`,
# where typer's rich mode would end them with a box border.
app = typer.Typer(cls=_OneLineErrors, no_args_is_help=True, add_completion=False, help=__doc__,
                  rich_markup_mode=None)


class _LevelPrefix(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(level: int | None = logging.INFO) -> None:
    """Show `aetheris.*` log messages from `level` up on stderr (None: stop showing them).
    Library code only logs; the command decides what is shown."""
    logger = logging.getLogger("aetheris")
    for old in [h for h in logger.handlers if getattr(h, "aetheris_cli", False)]:
        logger.removeHandler(old)
    logger.setLevel(logging.NOTSET if level is None else level)
    if level is None:
        return
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this invocation
    handler.aetheris_cli = True
    handler.setFormatter(_LevelPrefix("%(message)s"))
    logger.addHandler(handler)


@app.callback()
def _global_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


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
    level: Annotated[str, typer.Option(help="Group languages by one of: family, group.")] = "family",
    tokenizer: Annotated[
        list[str] | None,
        typer.Option(
            help="Tokenizer for fertility: a model name (embedded, folder, .gguf or hub id); repeatable. "
            "Default: the teacher's, when it is an embedded teacher, a .gguf or a folder with a tokenizer."
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
    if failed:  # bad input files: the same exit code as every other user error
        raise typer.Exit(2)


teacher_app = typer.Typer(no_args_is_help=True, help="Load and inspect teacher models.")
app.add_typer(teacher_app, name="teacher")
app.command("compress")(_compress_cmd)
app.command("merge")(_merge_cmd)
app.command("arbitrage")(_arbitrage_cmd)
app.command("study")(_study_cmd)


MODEL_HELP = f"embedded teacher ({', '.join(EMBEDDED_TEACHERS)}), model folder, .gguf file or hub id"


@teacher_app.command("info")
def teacher_info(
    source: str = typer.Argument(..., help=f"The model: {MODEL_HELP}."),
    dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
    cache_dir: str = typer.Option(None, help="GGUF cache (default $AETHERIS_CACHE/teachers)."),
) -> None:
    """Print what the student initialiser will read from a teacher."""
    from aetheris.teacher import introspect, load_teacher
    from aetheris.teacher.summary import print_spec

    loaded = load_teacher(source, dtype=dtype, cache_dir=cache_dir)
    cached = " (from cache)" if loaded.from_cache else ""
    typer.echo(f"loaded {loaded.name} in {loaded.seconds:.1f}s{cached}")
    print_spec(introspect(loaded.model))


@app.command("eval")
def eval_cmd(
    models: Annotated[list[str], typer.Argument(help=f"Models, each an {MODEL_HELP}.")],
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
    dtype: str = typer.Option(
        "auto", help="auto (the checkpoint's own), native (bfloat16 where the CPU/GPU has it, else float32), "
        "float32, bfloat16 or float16."
    ),
    chat_template: bool = typer.Option(False, help="Chat-format generative prompts."),
    max_new_tokens: int = typer.Option(None, help="Override generative tasks' token budget."),
) -> None:
    """Evaluate models on the multilingual tasks; resumes from the per-item cache."""
    import os

    from aetheris.eval.runner import run
    from aetheris.teacher.load import resolve_model

    for model in models:  # every name checked before the first model loads
        resolve_model(model)
    _check_device(device)
    if dtype not in EVAL_DTYPES:
        raise BadValueError(f"--dtype {dtype!r}: expected one of {', '.join(EVAL_DTYPES)}")
    data = data_dir or os.environ.get("AETHERIS_DATA_DIR")
    if data and not Path(data).is_dir():
        given = "--data-dir" if data_dir else "$AETHERIS_DATA_DIR"
        raise MissingPathError(f"{given} {data}: no such folder; expected the benchmark data folder")
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


def _check_device(device: str) -> None:
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        raise BadValueError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None


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


def _load_run_config(path: Path):
    """The validated run config, its teacher name checked as every model name is (no loading)."""
    from aetheris.distill.config import ConfigError, load_config
    from aetheris.teacher.load import resolve_model

    cfg = load_config(path)
    try:
        resolve_model(cfg.teacher.name)
    except UserError as err:
        raise ConfigError(f"{path}: teacher.name: {err}") from None
    return cfg


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Run config (YAML).")]) -> None:
    """Validate a distillation run config; every bad key is named."""
    from aetheris.distill.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    cfg = _load_run_config(path)
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
    from aetheris.distill.pipeline import run_stages
    from aetheris.teacher import UnsupportedArchitectureError

    cfg = _load_run_config(config)
    try:
        student = run_stages(cfg, stage=stage, resume=resume)
    except UnsupportedArchitectureError as err:  # say which teacher, from which config
        raise BadValueError(f"{config}: teacher.name {cfg.teacher.name}: {err}") from None
    typer.echo(f"student written to {student}")


@app.command("sft-model")
def sft_model(
    config: Annotated[Path, typer.Argument(help="SFT config (YAML), e.g. configs/sft-tools-gemma3-270m.yaml.")],
    resume: Annotated[bool, typer.Option(help="Continue a killed run from its last checkpoint.")] = False,
) -> None:
    """Fine-tune any causal LM (a teacher too) on chats and tool items with the sft stage's parts."""
    from aetheris.distill.sft_model import load_sft_config, run_sft

    typer.echo(f"model written to {run_sft(load_sft_config(config), resume=resume)}")
