"""Auxiliary losses and modality dropout of the Swin-UTAE baseline really act; missing inputs are zeros."""

from __future__ import annotations

import pytest
import torch
from baseline_fixtures import tiny_config

from finetune.module import segmentation_loss
from maestro.models.baseline import SwinUTAE
from maestro.models.synthetic import synthetic_batch

pytestmark = pytest.mark.usefixtures("single_thread")
MODALITIES = ("aerial", "s2", "s1_asc")


def gradients(model: SwinUTAE, aux_weight: float) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=False)
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    output = model(batch["inputs"], batch["times"], batch["valid"])
    targets = torch.randint(0, 15, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    loss, parts = segmentation_loss(output, targets, aux_weight)
    assert {f"aux_{key}" for key in MODALITIES} <= set(parts)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_the_aux_loss_drives_the_aux_heads_and_the_encoders() -> None:
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(MODALITIES, aux_heads=True)).eval()  # eval: no BN batch statistics
    without, with_aux = gradients(model, 0.0), gradients(model, 0.5)
    aux = [name for name in without if name.startswith("aux_heads.")]
    assert {name.split(".")[1] for name in aux} == set(MODALITIES)
    assert all((without[name] == 0).all() for name in aux)
    for key in MODALITIES:
        assert any(with_aux[name].abs().sum() > 0 for name in aux if name.startswith(f"aux_heads.{key}."))
    encoders = [name for name in without if name.startswith(("swins.", "utaes."))]
    assert any(not torch.allclose(without[name], with_aux[name]) for name in encoders)
    decoder = [name for name in without if name.startswith("decoders.")]
    assert all(torch.allclose(without[name], with_aux[name]) for name in decoder)


def test_modality_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    plain = SwinUTAE(tiny_config(MODALITIES))
    dropping = SwinUTAE(tiny_config(MODALITIES, modality_dropout=0.9))
    dropping.load_state_dict(plain.state_dict())
    batch = synthetic_batch(plain.config.encoder, batch_size=4)
    args = (batch["inputs"], batch["times"], batch["valid"])
    torch.testing.assert_close(plain.eval()(*args)["logits"], dropping.eval()(*args)["logits"])
    torch.manual_seed(1)
    assert not torch.allclose(plain.train()(*args)["logits"], dropping.train()(*args)["logits"])


def test_a_missing_modality_is_a_modality_without_valid_dates() -> None:
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(MODALITIES)).eval()
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    inputs = {key: value for key, value in batch["inputs"].items() if key != "s2"}
    with pytest.raises(ValueError, match="allow_missing"):
        model(inputs, batch["times"], batch["valid"])
    missing = model(inputs, batch["times"], batch["valid"], allow_missing=True)["logits"]
    valid = dict(batch["valid"], s2=torch.zeros_like(batch["valid"]["s2"]))
    noise = dict(batch["inputs"], s2=torch.randn_like(batch["inputs"]["s2"]))
    torch.testing.assert_close(missing, model(noise, batch["times"], valid)["logits"])
    assert torch.isfinite(missing).all()


def test_sentinel_only_logits_average_the_present_modalities() -> None:
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(("s2", "s1_asc"))).eval()
    assert not model.swins and not model.decoders  # the U-TAE output is the prediction
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    both = model(batch["inputs"], batch["times"], batch["valid"])["logits"]
    alone = model({"s2": batch["inputs"]["s2"]}, batch["times"], batch["valid"], allow_missing=True)["logits"]
    assert both.shape == alone.shape == (2, 15, 32, 32) and not torch.allclose(both, alone)
    single = SwinUTAE(tiny_config(("s2",)))
    single.utaes.load_state_dict({f"s2.{k}": v for k, v in model.utaes["s2"].state_dict().items()})
    torch.testing.assert_close(
        alone, single.eval()({"s2": batch["inputs"]["s2"]}, batch["times"], batch["valid"])["logits"]
    )


def test_the_baseline_with_aux_heads_traces_as_one_graph() -> None:
    """``model.compile()`` gets the whole Swin-UTAE, aux heads and output dict included, as one graph."""
    torch.manual_seed(0)
    model = SwinUTAE(tiny_config(MODALITIES, aux_heads=True))
    batch = synthetic_batch(model.config.encoder, batch_size=2)
    explained = torch._dynamo.explain(model)(batch["inputs"], batch["times"], batch["valid"])
    assert explained.graph_break_count == 0, explained.break_reasons
