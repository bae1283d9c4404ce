"""One YAML file per distillation run, validated into `RunConfig` with errors that name the key."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aetheris.config_file import read_yaml_mapping
from aetheris.data.hub import DataSource
from aetheris.data.mixture import BOS_MODES
from aetheris.distill.align import ALIGN_INPUTS, LOSSES
from aetheris.distill.group_dro import DRO_PRIORS, DRO_SIGNALS, GROUP_FIELDS, REWEIGHTS, WEIGHTINGS
from aetheris.distill.init import EXPERT_STRATEGIES, INIT_SOURCES, SPLIT_PARTITIONS, SPLIT_ROUTERS
from aetheris.distill.layer_map import ATTENTION_PLACEMENTS, LAYER_MAPS
from aetheris.distill.optim import OPTIMIZERS, SCHEDULES
from aetheris.errors import BadValueError, UserError
from aetheris.languages import REGIONS
from aetheris.model.configuration import BLOCK_KINDS

logger = logging.getLogger(__name__)

# Each choice's values are owned by the module that implements it; the Literals here are derived.
DTYPES = ("float32", "bfloat16", "float16")
# Built-in SFT chats: the embedded corpus's chats and the tool-calling training split (pipeline.Run.examples).
EMBEDDED_CHATS = ("embedded:chat", "embedded:tools")
# sft.region: Tiny Aya's five regions (the registry's `region`; "Other" is no SFT mixture).
SFT_REGIONS = tuple(r for r in REGIONS if r != "Other")



class ConfigError(UserError, ValueError):
    """A run config that cannot be used: the message names the file and every bad key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherConfig(_Strict):
    name: str = Field(description="hub id, local model folder or .gguf file")
    dtype: Literal[DTYPES] = "float32"


class AttentionProbeConfig(_Strict):
    """The per-layer probe behind `student.attention_layers: probe` (attention_probe.py)."""

    align_steps: int | None = Field(None, gt=0, description="align steps per probed block; default train.align.steps")
    calibration_samples: int | None = Field(
        None, gt=0, description="rows each probed block is aligned on; default align.calibration_samples"
    )
    held_out_rows: int = Field(4, gt=0, description="held-out rows each replacement's KL is measured on")


class StudentConfig(_Strict):
    layout: str = "SM" * 12
    overrides: dict[str, Any] = Field(default_factory=dict, description="extra AetherisConfig fields")
    # Which teacher layer feeds each student block pair: evenly spaced, explicit, or ShortGPT's
    # block influence on calibration text.
    layer_map: Literal[LAYER_MAPS] | list[int] = "uniform"
    experts: Literal[EXPERT_STRATEGIES] = "split"
    # With split experts, what each router is fitted to at init: the group's mean |activation|
    # (MoEfication), or how close the group alone comes to the whole MLP's output.
    split_router: Literal[SPLIT_ROUTERS] = "activation"
    # With split experts, how each expert's neurons are chosen: a partition of the neurons
    # (MoEfication's k-means), or the neurons that carry each equal share of the tokens
    # (`token_experts`: experts may share neurons; BENCHMARKS §10c).
    split_partition: Literal[SPLIT_PARTITIONS] = "neurons"
    # Where the weights come from: the teacher (MambaInLlama attention -> SSM, MLP -> experts,
    # embeddings copied), or the model's own random initialisation with the same config and shapes
    # (the baseline that shows what init-from-teacher buys; `experts` then only sets the width).
    init: Literal[INIT_SOURCES] = "teacher"
    # Which mixer blocks keep the teacher's attention (A) and which become SSMs (S): unset = as the
    # layout says; `uniform` = round(attention_fraction * mixers) evenly spaced (MambaInLlama);
    # `probe` = as many where replacing that one layer by its aligned SSM raises held-out KL most;
    # a list = those teacher layers.
    attention_layers: Literal[ATTENTION_PLACEMENTS] | list[int] | None = None
    attention_fraction: float | None = Field(None, ge=0, le=1, description="share of mixer blocks kept as attention")
    probe: AttentionProbeConfig = Field(default_factory=AttentionProbeConfig)

    @model_validator(mode="after")
    def _attention_choice(self) -> StudentConfig:
        choice, fraction = self.attention_layers, self.attention_fraction
        if choice is None and fraction is not None:
            raise ValueError("attention_fraction needs attention_layers: uniform or probe")
        if isinstance(choice, str) and fraction is None:
            raise ValueError(f"attention_layers: {choice} needs attention_fraction (0 to 1)")
        if isinstance(choice, list) and fraction is not None:
            raise ValueError("attention_layers lists the layers itself: drop attention_fraction")
        if choice is not None and "A" in self.layout:
            raise ValueError(
                f"layout {self.layout!r} places attention itself: write S for every mixer when attention_layers is set"
            )
        return self

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from aetheris.model.configuration import AetherisConfig

        known = set(inspect.signature(AetherisConfig.__init__).parameters) - {"self", "kwargs", "layout"}
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown AetherisConfig field(s) {unknown}; known: {', '.join(sorted(known))}")
        return v

    @field_validator("layout")
    @classmethod
    def _layout_letters(cls, v: str) -> str:
        if not v or set(v) - set(BLOCK_KINDS):
            raise ValueError(f"expected a non-empty string of the letters {', '.join(BLOCK_KINDS)}, got {v!r}")
        return v


class DataConfig(_Strict):
    train: list[DataSource] = Field(
        min_length=1, description="files, folders, hf:<id>, embedded, or hub mappings (aetheris.data.hub)"
    )
    eval: list[DataSource] = Field(default_factory=list, description="held-out text, same forms as train")
    tau: float = Field(0.3, gt=0, le=1, description="language sampling p_i ∝ n_i^tau")
    seq_len: int = Field(gt=0)
    lazy_rows: bool = Field(
        False,
        description="build each KD row when the trainer reads it (documents drawn per row, with replacement) "
        "instead of packing every row up front: constant memory at billions of tokens; no top-k cache",
    )
    bos: Literal[BOS_MODES] = Field(
        "auto",
        description="start every packed document (and row) with the tokenizer's BOS: auto = where encoding "
        "a text adds it (Gemma, Llama); false reproduces runs made before rows had it",
    )
    pack: Literal["mixed", "language"] = Field(
        "mixed",
        description="a row's documents follow the mixture (mixed: short documents make rows of many "
        "languages), or all come from the language of its first (language: what group DRO needs)",
    )


class AlignConfig(_Strict):
    loss: Literal[tuple(LOSSES)] = Field("mse", description="normalised MSE, or 1 - cosine similarity")
    moe: bool = Field(True, description="also fit each MoE block (router included) to its teacher MLP")
    moe_lr_scale: float = Field(0.3, gt=0, description="MoE blocks' learning rate, as a fraction of the align lr")
    inputs: Literal[ALIGN_INPUTS] = Field(
        "student", description="each block sees the student's own stream (blocks in order), or the teacher's"
    )
    calibration_samples: int = Field(256, gt=0)


class KDConfig(_Strict):
    data: DataConfig | None = Field(
        None,
        description="KD's own rows (sources, packing, length), e.g. in-domain text of one language per row "
        "while align keeps the run's calibration data; unset = the run's data section",
    )
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.0, ge=0, description="weight of the CE on labels")
    top_k_cache: bool = False
    top_k: int = Field(64, gt=0)
    chunk_size: int = Field(1024, gt=0, description="positions per logits chunk")
    fused_loss: bool = Field(
        True, description="head gradients taken per chunk in the forward (3 head matmuls, not 4); false = checkpointed"
    )
    cache_dir: Path | None = Field(None, description="top-k cache folder; default <output_dir>/topk-cache")
    cache_dtype: Literal[DTYPES] = Field("float16", description="dtype of the cached top-k log-probs on disk")
    held_out_rows: int = Field(8, gt=0, description="held-out rows the KL before/after KD is measured on")
    freeze_embeddings: bool = Field(
        False, description="keep the tied embedding/head fixed during KD (skips the head-gradient product)"
    )
    # Equity-aware KD (aetheris.distill.group_dro): group weights q follow the groups' KL online.
    weighting: Literal[WEIGHTINGS] = Field(
        "uniform", description="uniform: per-token mean; group_dro: Σ_g q_g L_g, q_g ∝ q_g·exp(η·L_g) per step"
    )
    groups: Literal[GROUP_FIELDS] = Field("family", description="the language registry field rows are grouped by")
    reweight: Literal[REWEIGHTS] = Field(
        "loss", description="group_dro spends q as loss weights, or as the rows' group sampling probabilities"
    )
    dro_eta: float = Field(0.01, ge=0, description="η, step size of q's exponentiated update (per unit of the signal: nat of KL, or bit per byte)")
    dro_floor: float = Field(
        0.1, ge=0, le=1, description="no q_g below dro_floor / G (a fraction of the uniform weight)"
    )
    dro_smoothing: float = Field(
        0.0, ge=0, lt=1, description="EMA factor on each group's loss before the update (0 = the step's own)"
    )
    dro_signal: Literal[DRO_SIGNALS] = Field(
        "kl",
        description="L_g: the KL per token to the teacher, or the excess CE (student's minus teacher's at "
        "the labels) in bits per byte, the unit of a FLORES drop; excess_ce needs labels in the top-k cache",
    )

    dro_prior: Literal[DRO_PRIORS] = Field(
        "uniform",
        description="q at the start: uniform over the groups (Sagawa et al.), or each group's share of the KD "
        "rows, so that η = 0 is uniform KD and η tilts it towards the losing groups",
    )

    @model_validator(mode="after")
    def _sampling_needs_dro(self) -> KDConfig:
        if self.reweight == "sampling" and self.weighting != "group_dro":
            raise ValueError("reweight: sampling needs weighting: group_dro (uniform has no q to sample by)")
        if self.dro_signal != "kl" and self.weighting != "group_dro":
            raise ValueError(f"dro_signal: {self.dro_signal} needs weighting: group_dro (uniform has no q)")
        if self.dro_prior != "uniform" and self.weighting != "group_dro":
            raise ValueError(f"dro_prior: {self.dro_prior} needs weighting: group_dro (uniform has no q)")
        return self


class LanguageSelection(_Strict):
    """Tiny Aya's region models: SFT data restricted to one region's languages (or a list); the
    global run leaves both unset and trains on every language."""

    region: str | None = Field(None, description=f"keep only chats in this region's languages: {', '.join(SFT_REGIONS)}")
    languages: list[str] | None = Field(
        None, min_length=1, description="keep only chats in these languages (registry codes)"
    )

    @field_validator("region")
    @classmethod
    def _known_region(cls, v: str | None) -> str | None:
        if v is not None and v not in SFT_REGIONS:
            raise ValueError(f"unknown region {v!r}; expected one of {', '.join(SFT_REGIONS)}")
        return v

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, v: list[str] | None) -> list[str] | None:
        from aetheris.languages import UnknownLanguageError, get

        if v is None:
            return v
        try:
            return list(dict.fromkeys(get(code).code for code in v))  # canonical codes, once each
        except UnknownLanguageError as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _one_selection(self) -> LanguageSelection:
        if self.region is not None and self.languages is not None:
            raise ValueError("set region or languages, not both")
        return self

    def selected_languages(self) -> frozenset[str] | None:
        """Canonical codes of the languages SFT keeps; None = every language (the global run)."""
        if self.languages is not None:
            return frozenset(self.languages)
        if self.region is not None:
            from aetheris.languages import all_languages

            return frozenset(lang.code for lang in all_languages() if lang.region == self.region)
        return None

    def keep(self, chats: list[Any], where: str) -> list[Any]:
        """The chats (anything with a `.lang`) in the selected languages; none left is an error."""
        keep = self.selected_languages()
        if keep is None:
            return chats
        kept = [c for c in chats if c.lang in keep]
        what = f"{where}.region {self.region!r}" if self.region else f"{where}.languages {self.languages}"
        if not kept:
            raise BadValueError(f"{what}: none of the {len(chats)} chats is in those languages")
        logger.info("%s keeps %d of %d chats (%d languages)", what, len(kept), len(chats), len({c.lang for c in kept}))
        return kept


class SFTConfig(LanguageSelection):
    kl_weight: float = Field(0.0, ge=0, description="weight of KL(teacher || student) beside the CE")
    data: list[str] = Field(
        default_factory=lambda: list(EMBEDDED_CHATS),
        min_length=1,
        description="chat sources: embedded:chat (built-in chats), embedded:tools (the tool-calling "
        "training split), or files/hf: ids whose rows have messages",
    )
    max_length: int = Field(1024, gt=0, description="tokens per conversation (tool definitions included)")
    start_from: Path | None = Field(
        None, description="model folder SFT starts from (e.g. the global run's kd/); default: this run's kd/"
    )

    @field_validator("data")
    @classmethod
    def _known_embedded(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s.startswith("embedded") and s not in EMBEDDED_CHATS]
        if bad:
            raise ValueError(f"unknown built-in chat source(s) {bad}; built in: {', '.join(EMBEDDED_CHATS)}")
        return v


class TrainConfig(_Strict):
    """One stage's optimisation budget. `steps` counts optimizer steps."""

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0, description="per process, per micro-batch")
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(gt=0)
    optimizer: Literal[tuple(OPTIMIZERS)] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="on weight matrices only (not biases, norms, SSM scalars)")
    schedule: Literal[tuple(SCHEDULES)] = Field("cosine", description="after a linear warmup over warmup_steps")
    warmup_steps: int = Field(0, ge=0)
    clip: float | None = Field(1.0, gt=0, description="max gradient norm; null = no clipping")
    gradient_checkpointing: bool = False
    # auto: on where the hardware computes bf16 natively (precision.py reads the CPU flags / GPU);
    # false by default so that existing configs keep their fp32 numbers. Weights, optimizer state
    # and the loss's softmax/KL stay fp32 either way (autocast covers the matrix products only).
    bf16: Literal["auto"] | bool = Field(False, description="bf16 autocast: auto (where native), true or false")
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end")
    keep_checkpoints: int = Field(2, gt=0)
    seed: int = 0
    log_every: int = Field(10, gt=0)


class StageBudgets(_Strict):
    align: TrainConfig
    kd: TrainConfig
    sft: TrainConfig


class RunConfig(_Strict):
    teacher: TeacherConfig
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig
    align: AlignConfig = Field(default_factory=AlignConfig)
    kd: KDConfig = Field(default_factory=KDConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    train: StageBudgets
    output_dir: Path
    # Checkpoints serve only a stage that is still running (train.<stage>.keep_checkpoints bounds
    # them then); once its folder is written they are removed unless this is true.
    keep_stage_checkpoints: bool = False

    @property
    def kd_data(self) -> DataConfig:
        """The data KD's rows and held-out rows come from: kd.data where set, else the run's."""
        return self.kd.data or self.data

    @property
    def _kd_data_key(self) -> str:
        """The config key of `kd_data`, for messages that name it."""
        return "kd.data" if self.kd.data is not None else "data"

    @model_validator(mode="after")
    def _cache_needs_packed_rows(self) -> RunConfig:
        if self.kd_data.lazy_rows and self.kd.top_k_cache:
            raise ValueError(f"kd.top_k_cache needs {self._kd_data_key}.lazy_rows: false (the cache is built over "
                             "every row up front)")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _dro_needs_rows_of_one_language(self) -> RunConfig:
        # A row's group is its first document's; mixed rows of short documents are a dozen languages.
        if self.kd.weighting == "group_dro" and self.kd_data.pack != "language":
            raise ValueError(f"kd.weighting: group_dro needs {self._kd_data_key}.pack: language (each row of one language, "
                             "so its group is the group of all its tokens)")  # fmt: skip
        return self


_TYPE_WORDS = {
    "float": "a number", "int": "an integer", "bool": "true or false", "string": "a string",
    "list": "a list", "dict": "a mapping", "model": "a mapping",
}  # fmt: skip


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    got = f", got {err['input']!r}" if "input" in err and kind != "missing" else ""
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":  # our own validators: their message already shows the value
        return str(err["ctx"]["error"])
    for prefix, words in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_") or kind == f"{prefix}_type":
            if kind.endswith(("_parsing", "_type")):
                return f"expected {words}{got}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}{got}"


def _format(errors: list[dict[str, Any]]) -> list[str]:
    lines = []
    for err in errors:
        # Union members add their type name to the location; the reader wants only the key path.
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("list[int]",)))]
        lines.append(f"{'.'.join(loc) or '<top level>'}: {_describe(err)}")
    return sorted(set(lines), key=lines.index)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate an already-parsed mapping; errors name `source` and each bad key path."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = _format(exc.errors())
        raise ConfigError(f"{source}: {len(lines)} problem(s)\n  " + "\n  ".join(lines)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate one run config (YAML)."""
    return parse_config(read_yaml_mapping(path, ConfigError), str(path))
