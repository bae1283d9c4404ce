"""Run configs (shipped files validate, bad ones fail naming the key) and the top-k teacher cache."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from aetheris.distill.config import ConfigError, RunConfig, load_config, parse_config
from aetheris.distill.losses import KDObjective, TeacherTopK
from aetheris.distill.topk_cache import (
    CacheMismatchError,
    TopKCache,
    build_topk_cache,
    rows_fingerprint,
    tokenizer_fingerprint,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "tiny-aya.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, RunConfig)
    assert cfg.data.tau == 0.3 and cfg.train.kd.steps > 0


def test_shipped_configs_say_what_they_are_for():
    demo, aya = load_config(CONFIGS / "demo.yaml"), load_config(CONFIGS / "tiny-aya.yaml")
    assert demo.teacher.name == "gemma3-270m" and demo.train.kd.bf16 == "auto"
    assert aya.teacher.name == "CohereLabs/tiny-aya-global" and aya.train.kd.bf16 and aya.teacher.dtype == "bfloat16"
    assert aya.train.kd.steps >= 100 * demo.train.kd.steps
    # At its budget a top-k cache would be ~1 TB on disk: the GPU recipe distils from the online teacher.
    kd = aya.train.kd
    cache_bytes = kd.steps * kd.batch_size * kd.grad_accum * aya.data.seq_len * aya.kd.top_k * (4 + 2)
    assert cache_bytes > 10**12 and not aya.kd.top_k_cache


def _demo() -> dict:
    return yaml.safe_load((CONFIGS / "demo.yaml").read_text())


def _error(data, tmp_path) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in str(exc.value)
    return str(exc.value)


def test_wrong_type_names_key_and_value(tmp_path):
    data = _demo()
    data["kd"]["temperature"] = "hot"
    assert "kd.temperature: expected a number, got 'hot'" in _error(data, tmp_path)


def test_unknown_key_is_refused(tmp_path):
    data = _demo()
    data["train"]["kd"]["learning_rate"] = 1e-3
    assert "train.kd.learning_rate: unknown key" in _error(data, tmp_path)


def test_missing_and_out_of_range_keys(tmp_path):
    data = _demo()
    del data["data"]["seq_len"]
    data["data"]["tau"] = 1.5
    data["student"]["experts"] = "clone"
    msg = _error(data, tmp_path)
    assert "data.seq_len: required key is missing" in msg
    assert "data.tau:" in msg and "1.5" in msg
    assert "student.experts:" in msg and "'clone'" in msg


def test_student_init_is_teacher_or_random(tmp_path):
    data = _demo()
    assert parse_config(data).student.init == "teacher"  # the default: today's copy from the teacher
    data["student"]["init"] = "random"
    assert parse_config(data).student.init == "random"
    data["student"]["init"] = "zeros"
    assert "student.init: input should be 'teacher' or 'random', got 'zeros'" in _error(data, tmp_path)


def test_layer_map_forms_and_layout_letters():
    data = _demo()
    data["student"]["layer_map"] = [0, 5, 10, 17]
    assert parse_config(data).student.layer_map == [0, 5, 10, 17]
    data["student"]["layout"] = "SMX"
    with pytest.raises(ConfigError, match="student.layout"):
        parse_config(data, "x.yaml")


def test_student_overrides_must_be_aetheris_fields():
    data = _demo()
    data["student"]["overrides"] = {"num_experts": 8}
    assert parse_config(data).student.overrides == {"num_experts": 8}
    data["student"]["overrides"] = {"num_expert": 8}
    with pytest.raises(ConfigError, match=r"student.overrides: .*unknown AetherisConfig field\(s\) \['num_expert'\]"):
        parse_config(data, "x.yaml")


def _choices(model, field):
    """The values of the Literal in a config field's annotation (possibly inside a union)."""
    from typing import Literal, get_args, get_origin

    ann = model.model_fields[field].annotation
    literal = ann if get_origin(ann) is Literal else next(a for a in get_args(ann) if get_origin(a) is Literal)
    return get_args(literal)


def test_each_choice_is_the_list_its_implementation_owns():
    """The config's Literals are derived from the implementing modules, and each implementation
    takes every value the config allows (and refuses one it does not)."""
    from aetheris import AetherisConfig
    from aetheris.distill import align, init, layer_map, optim
    from aetheris.distill.config import AlignConfig, StudentConfig, TrainConfig
    from aetheris.model.configuration import BLOCK_KINDS
    from aetheris.model.ssd import SCAN_IMPLS

    assert _choices(StudentConfig, "experts") == init.EXPERT_STRATEGIES
    assert _choices(StudentConfig, "init") == init.INIT_SOURCES
    assert _choices(StudentConfig, "layer_map") == layer_map.LAYER_MAPS
    assert _choices(AlignConfig, "loss") == tuple(align.LOSSES)
    assert _choices(AlignConfig, "inputs") == align.ALIGN_INPUTS
    assert _choices(TrainConfig, "optimizer") == tuple(optim.OPTIMIZERS)
    assert _choices(TrainConfig, "schedule") == tuple(optim.SCHEDULES)
    data = _demo()
    data["student"]["layout"] = "".join(BLOCK_KINDS) + "M"
    assert parse_config(data).student.layout == "SMAM"
    for impl in SCAN_IMPLS:
        assert AetherisConfig(layout="SM", hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                              ssm_impl=impl).ssm_impl == impl  # fmt: skip
    with pytest.raises(ValueError, match="ssm_impl='fast'"):
        AetherisConfig(layout="SM", hidden_size=16, num_attention_heads=2, num_key_value_heads=1, ssm_impl="fast")
    with pytest.raises(ValueError, match="layer_map='deepest'"):
        layer_map.resolve_layer_map("deepest", 4, "SM")
    with pytest.raises(ValueError, match="align inputs='both'"):
        align.align_student(None, None, None, None, None, inputs="both")


def test_optimizer_and_schedule_knobs_build_what_they_name():
    from aetheris.distill.config import TrainConfig
    from aetheris.distill.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler

    w, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    for name in OPTIMIZERS:
        for schedule in SCHEDULES:
            cfg = TrainConfig(steps=10, batch_size=1, lr=0.1, optimizer=name, betas=(0.8, 0.9), eps=1e-6,
                              weight_decay=0.05, schedule=schedule, warmup_steps=2)  # fmt: skip
            opt = build_optimizer([w, b], cfg)
            sched = build_scheduler(opt, cfg)
            assert isinstance(opt, OPTIMIZERS[name]) and opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-6
            assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # matrices only
            lrs = []
            for _ in range(10):
                opt.step()
                sched.step()
                lrs.append(sched.get_last_lr()[0])
            assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)  # linear warmup over 2 steps
            expected_end = {"cosine": 0.0, "linear": 0.0, "constant": 0.1}[schedule]
            assert lrs[-1] == pytest.approx(expected_end, abs=1e-9)
    data = _demo()
    data["train"]["kd"]["schedule"] = "step"
    with pytest.raises(ConfigError, match=r"train.kd.schedule: input should be 'cosine', 'linear' or 'constant'"):
        parse_config(data, "x.yaml")


def test_kd_and_sft_knobs(tmp_path):
    data = _demo()
    cfg = parse_config(data)
    assert cfg.kd.cache_dtype == "float16" and cfg.kd.held_out_rows == 8
    assert cfg.sft.data == ["embedded:chat", "embedded:tools"]
    data["sft"]["data"] = ["embedded:tools", "chats.jsonl"]
    assert parse_config(data).sft.data == ["embedded:tools", "chats.jsonl"]
    data["sft"]["data"] = ["embedded:toolz"]
    assert "sft.data: unknown built-in chat source(s) ['embedded:toolz']; built in: embedded:chat, embedded:tools" in _error(data, tmp_path)
    data = _demo()
    data["sft"]["assistant_only"] = True  # nothing read it: the loss is always on assistant tokens only
    assert "sft.assistant_only: unknown key" in _error(data, tmp_path)
    data = _demo()
    data["kd"]["cache_dtype"] = "int8"
    assert "kd.cache_dtype: input should be" in _error(data, tmp_path)


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- top-k cache

VOCAB, SEQ = 50, 6


class _Tok:
    """Just enough tokenizer for the fingerprint."""

    def __init__(self, extra=""):
        self.vocab = {f"t{i}{extra}": i for i in range(VOCAB)}
        self.all_special_tokens = ["<s>"]

    def get_vocab(self):
        return self.vocab


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64)
    return LlamaForCausalLM(cfg).eval()


def _batches(rows):
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, VOCAB, (10, SEQ), generator=g)
    for start in range(0, len(rows), 4):
        r = rows[start : start + 4]
        yield {"input_ids": data[r], "attention_mask": torch.ones(len(r), SEQ, dtype=torch.long),
               "row_ids": torch.tensor(r)}


def _args(**over):
    args = {"teacher_id": "tiny-llama", "k": 8, "temperature": 2.0, "seq_len": SEQ,
            "tokenizer_hash": tokenizer_fingerprint(_Tok())}
    return {**args, **over}


def test_cache_round_trip_matches_teacher(teacher, tmp_path):
    rows = [3, 7, 1, 0, 9, 4, 2, 8, 5, 6]
    out = build_topk_cache(teacher, _batches(rows), tmp_path / "c", dtype=torch.float32, rows_per_forward=3,
                           positions_per_chunk=5, **_args())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["values"] == "log_probs_at_temperature" and manifest["rows"] == 10
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{i:05d}.safetensors" for i in range(3)]
    assert not list(out.glob(".*tmp*"))

    cache = TopKCache(out, **_args())
    data = torch.randint(0, VOCAB, (10, SEQ), generator=torch.Generator().manual_seed(1))
    ask = torch.tensor([6, 0, 3])  # rows from different shards, in batch order
    vals, ids = cache.lookup(ask)
    with torch.no_grad():
        ref_logp = F.log_softmax(teacher(data[ask]).logits / 2.0, -1)
    # The cache ran other batches (other shapes), so near-ties may swap ids between CPUs: check
    # that the cached ids carry the cached values and that those are the top-k values.
    assert torch.allclose(vals, ref_logp.topk(8, -1).values, atol=1e-6)
    assert torch.allclose(ref_logp.gather(-1, ids), vals, atol=1e-6)
    # The cached rows feed the top-k loss directly.
    hs, head = torch.randn(3, SEQ, 4), torch.randn(VOCAB, 4)
    out_loss = KDObjective(temperature=2.0)(hs, head, TeacherTopK(vals, ids))
    assert torch.isfinite(out_loss.loss)
    with pytest.raises(KeyError, match="not in the top-k cache"):
        cache.lookup([42])


def test_cache_is_reused_and_mismatch_refused(teacher, tmp_path):
    out = build_topk_cache(teacher, _batches(list(range(10))), tmp_path / "c", **_args())
    stamp = (out / "shard-00000.safetensors").stat().st_mtime_ns

    def boom():
        raise AssertionError("a matching cache must not run the teacher again")
        yield

    build_topk_cache(teacher, boom(), out, **_args())
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == stamp
    assert TopKCache(out, **_args()).lookup([0])[0].dtype == torch.float32  # fp16 on disk, fp32 out
    for over, key in [({"temperature": 1.0}, "temperature"), ({"k": 4}, "k"),
                      ({"tokenizer_hash": tokenizer_fingerprint(_Tok("x"))}, "tokenizer_hash"),
                      ({"teacher_id": "other"}, "teacher_id"), ({"seq_len": 12}, "seq_len"),
                      ({"rows_hash": "0" * 64}, "rows_hash")]:
        with pytest.raises(CacheMismatchError, match=key):
            TopKCache(out, **_args(**over))
        with pytest.raises(CacheMismatchError, match=key):
            build_topk_cache(teacher, boom(), out, **_args(**over))


def test_cache_is_tied_to_its_rows(teacher, tmp_path):
    """Runs may share a cache folder only over the same rows: same ids, same row order."""
    rows = [{"input_ids": torch.randint(0, VOCAB, (SEQ,), generator=torch.Generator().manual_seed(i)),
             "attention_mask": torch.ones(SEQ, dtype=torch.long)} for i in range(4)]  # fmt: skip
    same = [{k: v.clone() for k, v in r.items()} for r in rows]
    assert rows_fingerprint(rows) == rows_fingerprint(same)
    assert rows_fingerprint(rows) != rows_fingerprint(rows[::-1])  # row ids point elsewhere
    assert rows_fingerprint(rows) != rows_fingerprint(rows[:3])
    padded = [{**rows[0], "attention_mask": torch.tensor([1] * (SEQ - 1) + [0])}, *rows[1:]]
    assert rows_fingerprint(rows) != rows_fingerprint(padded)
    batches = ({"input_ids": r["input_ids"][None], "row_ids": torch.tensor([i])} for i, r in enumerate(rows))
    out = build_topk_cache(teacher, batches, tmp_path / "c", **_args(rows_hash=rows_fingerprint(rows)))
    assert len(TopKCache(out, **_args(rows_hash=rows_fingerprint(same)))) == 4  # a second run reuses it
    with pytest.raises(CacheMismatchError, match="rows_hash"):
        TopKCache(out, **_args(rows_hash=rows_fingerprint(rows[::-1])))
    with pytest.raises(CacheMismatchError, match="rows_hash"):
        TopKCache(out, **_args())  # a cache that names its rows serves no run that does not


def test_unfinished_cache_is_not_read(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        TopKCache(tmp_path / "c", **_args())


def test_check_config_command(tmp_path):
    from typer.testing import CliRunner

    from aetheris.cli import app

    ok = CliRunner().invoke(app, ["check-config", str(CONFIGS / "demo.yaml")])
    assert ok.exit_code == 0 and "ok (teacher gemma3-270m" in ok.output
    data = _demo()
    data["kd"]["temperature"] = "hot"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    bad = CliRunner().invoke(app, ["check-config", str(tmp_path / "bad.yaml")])
    assert bad.exit_code == 2 and "kd.temperature: expected a number, got 'hot'" in bad.output


def test_cache_with_label_logprobs(teacher, tmp_path):
    """label_logprobs: the teacher's log-prob at T = 1 of every next token, in or out of the top k;
    a run that needs them refuses a cache without, and a cache with them serves any run."""
    rows = [3, 7, 1, 0, 9, 4, 2, 8, 5, 6]
    out = build_topk_cache(teacher, _batches(rows), tmp_path / "c", dtype=torch.float32, rows_per_forward=3,
                           positions_per_chunk=5, label_logprobs=True, **_args())  # fmt: skip
    cache = TopKCache(out, label_logprobs=True, **_args())
    data = torch.randint(0, VOCAB, (10, SEQ), generator=torch.Generator().manual_seed(1))
    ask = torch.tensor([6, 0, 3])
    vals, ids, labels = cache.lookup_with_labels(ask)
    assert torch.equal(vals, cache.lookup(ask)[0]) and torch.equal(ids, cache.lookup(ask)[1])
    with torch.no_grad():
        logp = F.log_softmax(teacher(data[ask]).logits, -1)  # T = 1, not the cache's 2.0
    expected = logp[:, :-1].gather(-1, data[ask][:, 1:, None])[..., 0]
    assert labels.shape == (3, SEQ) and labels.dtype == torch.float32
    assert torch.allclose(labels[:, :-1], expected, atol=1e-5) and (labels[:, -1] == 0).all()
    assert (expected < logp[:, :-1].topk(8, -1).values[..., -1]).any()  # some labels lie outside the top k
    assert TopKCache(out, **_args()).lookup([0])[0].shape == (1, SEQ, 8)  # a run without the need reads it too

    plain = build_topk_cache(teacher, _batches(rows), tmp_path / "plain", **_args())
    with pytest.raises(CacheMismatchError, match="no label_logprobs"):
        TopKCache(plain, label_logprobs=True, **_args())
    with pytest.raises(CacheMismatchError, match="no label_logprobs"):
        build_topk_cache(teacher, _batches(rows), plain, label_logprobs=True, **_args())
    with pytest.raises(CacheMismatchError, match="no label_logprobs"):
        TopKCache(plain, **_args()).lookup_with_labels([0])
