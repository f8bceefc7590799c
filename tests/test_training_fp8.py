"""FP8 training (``trainer.precision: fp8``): which layers convert, refusals where FP8 cannot run,
and checkpoints that load into plain models.

No FP8 GPU here: torchao builds ``Float8Linear`` layers on CPU and, with this torch, runs them
there too (``torch._scaled_mm`` has a CPU kernel), so the conversion is the real one; only the
hardware check is bypassed in the end-to-end run ("simulated conversion").
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml
from multiprocess_helpers import run_forked_ranks, run_torchrun
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from maestro.config import load_config, to_dict
from maestro.errors import ConfigError
from maestro.hub.folder import load_strict
from maestro.hub.weights import sub_state
from maestro.models import MaestroMAE
from maestro.models.encoder import MaestroEncoder
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import synthetic_batch, tiny_config
from maestro.models.transformer import Block
from maestro.training import fp8
from maestro.training.config import TrainerConfig
from maestro.training.fp8 import FP8_MIN_FEATURES, convert_to_fp8, fp8_plan
from maestro.training.trainer import default_precision
from pretrain.config import PretrainConfig

BLOCK_LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
TINY_STREAMS = ("aerial", "dem", "s2", "s1")
"""The encoder streams of ``tiny_config()`` (group fusion: S1 ascending and descending together)."""


def _tiny_plan_names() -> list[str]:
    """What the tiny MAE converts with a 64-feature threshold: every block layer of the encoder
    (width 64, MLP 128; two blocks per stream, one late-fusion block), none of the decoders
    (width 32), nor the projections to the decoder and the pixel heads outside the blocks."""
    names = [
        f"encoder.streams.{stream}.blocks.{block}.{layer}"
        for stream in TINY_STREAMS
        for block in (0, 1)
        for layer in BLOCK_LAYERS
    ]
    return names + [f"encoder.late_fusion.blocks.0.{layer}" for layer in BLOCK_LAYERS]


def test_the_plan_names_the_block_layers_that_convert_for_a_tiny_config():
    model = MaestroMAE(tiny_config())
    plan = fp8_plan(model, min_features=64)
    assert [layer.name for layer in plan.converted] == _tiny_plan_names()
    kept = {layer.name for layer in plan.kept}
    assert {f"to_decoder.{s}" for s in TINY_STREAMS} <= kept  # outside the blocks
    assert {"heads.aerial.groups.0", "decoders.aerial.blocks.0.mlp.fc1"} <= kept  # head; width 32
    assert len(plan.converted) + len(plan.kept) == sum(
        isinstance(m, torch.nn.Linear) for m in model.modules()
    )
    assert plan.summary().startswith(
        "fp8: converting 36 linear layers (encoder.streams.aerial.blocks.*.{attn.qkv, attn.proj, mlp.fc1, "
        "mlp.fc2}, encoder.streams.dem.blocks.*."
    )
    assert "leaving 25 others in bf16" in plan.summary()
    # At the default threshold nothing of a 64-wide model pays: the run is refused, not run in bf16.
    assert fp8_plan(model).converted == ()
    with pytest.raises(ConfigError, match=f"at least {FP8_MIN_FEATURES} features; this model"):
        convert_to_fp8(model)


def test_widths_that_are_not_multiples_of_16_stay_in_bf16():
    model = MaestroMAE(tiny_config(width=72, num_heads=1))  # MLP 144 = 9 x 16, width 72 is not
    assert fp8_plan(model, min_features=64).converted == ()


def test_conversion_keeps_the_state_dict_and_it_loads_into_plain_models(caplog):
    torch.manual_seed(0)
    model = MaestroMAE(tiny_config())
    plain = copy.deepcopy(model)
    before = model.state_dict()
    with caplog.at_level(logging.INFO, logger="maestro.training.fp8"):
        convert_to_fp8(model, min_features=64)
    assert "fp8: converting 36 linear layers" in caplog.text
    modules = dict(model.named_modules())
    assert all(type(modules[name]).__name__ == "Float8Linear" for name in _tiny_plan_names())
    assert type(modules["to_decoder.aerial"]) is torch.nn.Linear
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in after.items():
        assert (value.dtype, value.shape) == (before[key].dtype, before[key].shape), key
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    # The FP8 model's weights load strictly into a plain fp32 and a plain bf16 MAE...
    load_strict(MaestroMAE(tiny_config()), after, "an FP8 model")
    load_strict(MaestroMAE(tiny_config()).to(torch.bfloat16), after, "an FP8 model")
    # ...and its encoder into a plain encoder, as fine-tuning, publishing and predict load one.
    load_strict(MaestroEncoder(tiny_config().encoder), sub_state(after, "encoder."), "an FP8 encoder")
    # The FP8 matrix products really run (CPU kernels), close to the plain model's.
    batch = synthetic_batch(tiny_config(), batch_size=4)
    got = model.encoder(batch["inputs"], batch["times"], batch["valid"]).tokens
    want = plain.encoder(batch["inputs"], batch["times"], batch["valid"]).tokens
    for key in want:
        error = (got[key] - want[key]).abs().max() / want[key].abs().max()
        assert 0 < error < 0.02, (key, error)


def test_a_segmenter_converts_its_encoder_and_keeps_its_keys():
    config = SegmenterConfig(encoder=tiny_config().encoder, num_classes=3, head="linear", label_size=32)
    model = MaestroSegmenter(config)
    before = {key: (value.dtype, value.shape) for key, value in model.state_dict().items()}
    plan = convert_to_fp8(model, min_features=64)
    assert plan.converted and all(layer.name.startswith("encoder.") for layer in plan.converted)
    assert {key: (value.dtype, value.shape) for key, value in model.state_dict().items()} == before
    load_strict(MaestroSegmenter(config), model.state_dict(), "an FP8 segmenter")


def test_fp8_trains_under_bf16_mixed():
    assert default_precision(TrainerConfig(precision="fp8")) == "bf16-mixed"


# ------------------------------------------------------------------------------ refusals


def test_fp8_is_refused_on_cpu():
    with pytest.raises(ConfigError, match="needs NVIDIA GPUs with FP8 matrix units .* this run is on CPU"):
        fp8.check_supported(TrainerConfig(precision="fp8", accelerator="cpu"))


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: name)


def test_fp8_is_refused_on_a_gpu_without_fp8_units(monkeypatch):
    _fake_gpu(monkeypatch, (8, 0), "NVIDIA A100-SXM4-80GB")
    with pytest.raises(ConfigError, match=r"GPU 0 \(NVIDIA A100-SXM4-80GB\) has 8\.0"):
        fp8.check_supported(TrainerConfig(precision="fp8", accelerator="gpu"))
    with pytest.raises(ConfigError, match=r"GPU 1 \(NVIDIA A100-SXM4-80GB\) has 8\.0"):
        fp8.check_supported(TrainerConfig(precision="fp8", accelerator="gpu", devices="1"))


def test_fp8_is_refused_without_torchao(monkeypatch):
    _fake_gpu(monkeypatch, (9, 0), "NVIDIA H100 80GB HBM3")
    fp8.check_supported(TrainerConfig(precision="fp8"))  # a Hopper GPU with torchao: accepted
    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # as if torchao were not installed
    with pytest.raises(
        ConfigError, match="torchao's float8 training, which cannot be imported .* pip install"
    ):
        fp8.check_supported(TrainerConfig(precision="fp8"))


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_the_stage_clis_refuse_fp8_on_cpu_before_reading_anything(stage, tmp_path, caplog):
    """Exit 2 with the reason, before shards are opened (they do not even exist) or a run folder made."""
    if stage == "pretrain":
        from pretrain.cli import main
    else:
        from finetune.cli import main
    missing = str(tmp_path / "no_shards")
    config = {"data": {"train": missing, "val": missing, "test": missing}, "trainer": {"output_dir": "run"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--config", str(tmp_path / "config.yaml"), "trainer.precision=fp8", "--accelerator", "cpu"]
    args += ["--output-dir", str(tmp_path / "run")]
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    assert "trainer.precision=fp8 needs NVIDIA GPUs" in caplog.text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", [0, 8, 100])
def test_fp8_min_features_must_be_a_positive_multiple_of_16(value):
    with pytest.raises(ConfigError, match=f"fp8_min_features must be a positive multiple of 16, got {value}"):
        TrainerConfig(fp8_min_features=value)


def test_fp8_min_features_defaults_to_the_module_threshold():
    assert TrainerConfig().fp8_min_features == FP8_MIN_FEATURES == 512


# ------------------------------------------------------------------------------ end to end


FP8_ENCODER = {
    "modalities": ["s2"],
    "overrides": {"s2": {"num_dates": 2, "patch_size": 5}},
    "size": "tiny",
    "width": 64,
    "depth": 1,
    "inter_depth": 0,
    "grid_size": 2,
}
"""One block on few tokens, narrow (FP8 products are slow on CPU): the run lowers
``trainer.fp8_min_features`` to its width, so its layers convert as in a real run."""


def _fp8_pretrain_config(shards: Path, out: Path, batches: int, **trainer: object) -> PretrainConfig:
    """A one-epoch FP8 ``pretrain`` of the FP8_ENCODER model on CPU, its threshold at the width."""
    raw = {
        "data": {"train": str(shards), "batch_size": 2, "num_workers": 0, "batches_per_epoch": batches},
        "model": {"encoder": FP8_ENCODER, "decoder_width": 32, "decoder_heads": 2, "decoder_depth": 1},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 1,
            "accelerator": "cpu",
            "precision": "fp8",
            "fp8_min_features": 64,
            "reconstruction_every_n_steps": 0,
            **trainer,
        },
    }
    overrides = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in raw.items()]
    return load_config(PretrainConfig, None, overrides)


def test_an_fp8_pretraining_run_writes_checkpoints_that_load_in_plain_models(
    toy_shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    from maestro.models.registry import MAESTRO_ENCODER
    from maestro.models.zoo import export_checkpoint, load_encoder_weights, load_weights
    from pretrain.cli import run

    monkeypatch.setattr(fp8, "check_supported", lambda trainer: None)  # as on an FP8 GPU
    out = tmp_path / "run"
    config = _fp8_pretrain_config(toy_shards, out, batches=1, devices=1, ema_decay=0.9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with caplog.at_level(logging.INFO, logger="maestro.training.fp8"):
            trainer = run(config)
    finally:
        torch.set_num_threads(threads)
    assert trainer.global_step == 1
    # The encoder block's 4 layers; the decoder (width 32) stays in bf16.
    assert "fp8: converting 4 linear layers (encoder.streams.s2.blocks.*.{attn.qkv" in caplog.text
    plain = MaestroMAE(config.model)
    for pick in ("ema", "model"):
        weights = load_weights(out, pick=pick)
        assert list(weights.state) == list(plain.state_dict()), pick
        assert {v.dtype for v in weights.state.values()} == {torch.float32}
        load_strict(MaestroMAE(weights.config).to(torch.bfloat16), weights.state, f"{out} ({pick})")
    encoder = load_encoder_weights(out)  # what finetune --init reads
    assert encoder.model_type is MAESTRO_ENCODER
    load_strict(MaestroEncoder(encoder.config), encoder.state, "the FP8 run's encoder")
    exported = export_checkpoint(out)  # what maestro publish writes (checked with load_strict inside)
    assert exported is not None


@pytest.mark.slow
def test_fp8_trains_under_ddp_and_both_ranks_end_with_the_same_plain_weights(
    toy_shards: Path, tmp_path: Path
):
    """Two gloo ranks under torchrun, FP8 layers converted before DDP wraps the model: the gradients
    of the float8 layers' high-precision weights are all-reduced like any others, so both ranks
    end with identical weights, under the plain model's keys."""
    out = tmp_path / "ddp"
    config = _fp8_pretrain_config(toy_shards, out, batches=2, devices=2, strategy="ddp")
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config)))
    output = run_torchrun(Path(__file__).with_name("fp8_ddp_worker.py"), str(config_file))
    assert "fp8: converting 4 linear layers" in output
    rank0, rank1 = (torch.load(out / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    plain = MaestroMAE(config.model).state_dict()
    assert list(rank0) == list(rank1) == list(plain)
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    name = "encoder.streams.s2.blocks.0.mlp.fc1.weight"  # an FP8 layer: trained, not frozen
    assert not torch.equal(rank0[name], plain[name])


def _fsdp_rank(rank: int, world_size: int, port: int, out_dir: Path) -> None:
    """One gloo rank: the tiny MAE with FP8 block layers, sharded per Block as the fsdp strategy
    wraps it, one training step, then the full state dict gathered as its checkpoints are."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = MaestroMAE(tiny_config())
        convert_to_fp8(model, min_features=64)
        sharded = FSDP(
            model,
            auto_wrap_policy=ModuleWrapPolicy({Block}),
            device_id=torch.device("cpu"),
            use_orig_params=True,
        )
        optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-3)
        batch = synthetic_batch(tiny_config(), batch_size=2, seed=rank)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sharded(batch["inputs"], batch["times"], batch["valid"])["loss"]
        loss.backward()
        optimizer.step()
        policy = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(sharded, StateDictType.FULL_STATE_DICT, policy):
            state = sharded.state_dict()
        if rank == 0:
            torch.save(state, out_dir / "full.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fp8_layers_shard_under_fsdp_and_gather_into_a_plain_state_dict(tmp_path: Path):
    """torchao's float8 layers keep plain parameters, so FSDP (the fsdp strategy's per-Block
    wrapping; gloo on CPU, where the stage itself refuses FSDP) shards, trains and gathers them."""
    run_forked_ranks(_fsdp_rank, 2, tmp_path, timeout=120)
    state = torch.load(tmp_path / "full.pt", weights_only=True)
    torch.manual_seed(0)
    initial = MaestroMAE(tiny_config()).state_dict()
    assert list(state) == list(initial)
    load_strict(MaestroMAE(tiny_config()), state, "an FP8 model gathered from FSDP")
    name = "encoder.streams.s2.blocks.0.mlp.fc1.weight"  # an FP8 layer, trained on both shards
    assert not torch.equal(state[name], initial[name])
