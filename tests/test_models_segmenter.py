import pytest
import torch
import torch.nn.functional as F

from maestro.labels import IGNORE_INDEX
from maestro.models.encoder import MaestroEncoder
from maestro.models.heads.uperfuse import UPerFuseDecoder
from maestro.models.mae import MaestroMAE
from maestro.models.segmenter import MaestroSegmenter, drop_modalities
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import synthetic_batch, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

MODES = ["shared", "monotemp", "mod", "group"]
CLASSES = 4


def _segmenter(mode: str = "group", seed: int = 0, **changes) -> MaestroSegmenter:
    torch.manual_seed(seed)
    fields = {"num_classes": CLASSES, "label_size": 32, "decoder_channels": 32, **changes}
    return MaestroSegmenter(SegmenterConfig(encoder=tiny_config(fusion=mode).encoder, **fields))


def _batch(batch_size: int = 2, seed: int = 0) -> dict:
    return synthetic_batch(tiny_config(), batch_size=batch_size, seed=seed)


def _labels(batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    """Blocky labels (8 px cells) with a few ignored pixels: learnable at 32 px from a 4 x 4 grid."""
    generator = torch.Generator().manual_seed(seed)
    cells = torch.randint(0, CLASSES, (batch_size, 4, 4), generator=generator)
    labels = cells.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)
    labels[:, :2, :2] = IGNORE_INDEX
    return labels


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("head", ["uperfuse", "maestro", "linear"])
@pytest.mark.parametrize("mode", MODES)
def test_logits_at_the_label_size_for_every_head_and_fusion_mode(head, mode):
    model = _segmenter(mode, head=head).eval()
    with torch.no_grad():
        output = model(**_batch())
    assert set(output) == {"logits"}
    assert output["logits"].shape == (2, CLASSES, 32, 32)
    assert torch.isfinite(output["logits"]).all()


def test_state_dict_keeps_the_encoder_layout_under_its_prefix():
    model = _segmenter(aux_heads=True)
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder", "decoder", "head", "aux_heads"}
    encoder_keys = list(MaestroEncoder(tiny_config().encoder).state_dict())
    assert [k for k in keys if k.startswith("encoder.")] == [f"encoder.{k}" for k in encoder_keys]
    assert isinstance(model.decoder, UPerFuseDecoder)


def test_pretrained_encoder_weights_load_strictly():
    torch.manual_seed(1)
    mae = MaestroMAE(tiny_config()).eval()
    model = _segmenter().eval()
    model.encoder.load_state_dict(mae.encoder.state_dict(), strict=True)
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder(**batch).tokens["aerial"], mae.encoder(**batch).tokens["aerial"]
        )


def test_maestro_head_exposes_its_pooled_features():
    model = _segmenter(head="maestro").eval()
    with torch.no_grad():
        features = model.forward_features(**_batch())
    assert features.shape == (2, model.encoder.width, 4, 4)


def test_drop_modalities_never_drops_every_modality_of_a_sample():
    generator = torch.Generator().manual_seed(0)
    valid = {key: torch.ones(4000, 2, dtype=torch.bool) for key in ("a", "b", "c")}
    valid["c"][:1000] = False  # c absent from the first quarter: only a and b can be kept there
    dropped = drop_modalities(valid, p=0.5, generator=generator)
    kept = torch.stack([v.any(dim=1) for v in dropped.values()], dim=1)
    assert kept.any(dim=1).all()
    assert not kept[:1000, 2].any()  # an absent modality is never the one spared
    # kept with 1 - p, or spared when all were drawn: 1/4 (1/2 + 1/8) + 3/4 (1/2 + 1/24) = 0.5625
    assert 0.53 < kept[:, 0].float().mean() < 0.59
    for key in valid:  # a dropped modality loses all its dates
        assert torch.equal(dropped[key][:, 0], dropped[key][:, 1])
    none = {key: torch.zeros(3, 2, dtype=torch.bool) for key in ("a", "b")}
    assert not any(v.any() for v in drop_modalities(none, 0.5).values())


def _grads(p: float, training: bool = True) -> dict[str, torch.Tensor]:
    model = _segmenter(modality_dropout=p, seed=0).train(training)
    torch.manual_seed(123)
    _loss(model(**_batch(4))["logits"], _labels(4)).backward()
    return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}


def test_modality_dropout_changes_the_gradients_in_training_only():
    plain, dropped = _grads(0.0), _grads(0.9)
    assert plain.keys() == dropped.keys()
    assert not torch.allclose(plain["head.conv.weight"], dropped["head.conv.weight"])
    assert not torch.allclose(
        plain["encoder.patch_embed.aerial.groups.0.proj.weight"],
        dropped["encoder.patch_embed.aerial.groups.0.proj.weight"],
    )
    plain_eval, dropped_eval = _grads(0.0, training=False), _grads(0.9, training=False)
    torch.testing.assert_close(plain_eval["head.conv.weight"], dropped_eval["head.conv.weight"])


def test_aux_heads_learn_from_an_aux_loss():
    model = _segmenter(aux_heads=True).train()
    output = model(**_batch())
    assert set(output["aux"]) == set(tiny_config().encoder.modalities)
    assert all(x.shape == (2, CLASSES, 32, 32) for x in output["aux"].values())
    sum(_loss(x, _labels()) for x in output["aux"].values()).backward()
    single_token = {
        key for key, s in tiny_config().encoder.specs.items() if s.num_dates * s.num_token_groups == 1
    }
    for name, param in model.aux_heads.named_parameters():
        if name.endswith("query") and name.split(".")[0] in single_token:
            continue  # a query attending over one token has no effect: zero gradient is right
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.head.conv.weight.grad is None  # the main head is not in that loss


def test_frozen_encoder_stays_bit_identical_and_in_eval_mode():
    model = _segmenter(freeze_encoder=True).train()
    assert not model.encoder.training and model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = model.head.conv.weight.clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        _loss(model(**_batch())["logits"], _labels()).backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(head_before, model.head.conv.weight)
    model.train()
    assert not model.encoder.training


def test_missing_modalities_count_as_fully_invalid_when_allowed():
    model, batch = _segmenter(aux_heads=True).eval(), _batch()
    partial = {part: {k: v for k, v in batch[part].items() if k != "s2"} for part in batch}
    with pytest.raises(ValueError, match=r"lacks configured modalities \['s2'\].*allow_missing=True"):
        model(**partial)
    explicit = {part: dict(values) for part, values in batch.items()}
    explicit["inputs"]["s2"] = torch.zeros_like(batch["inputs"]["s2"])
    explicit["times"]["s2"] = torch.zeros_like(batch["times"]["s2"])
    explicit["valid"]["s2"] = torch.zeros_like(batch["valid"]["s2"])
    with torch.no_grad():
        missing = model(**partial, allow_missing=True)
        expected = model(**explicit)
        without_valid = model(partial["inputs"], partial["times"], allow_missing=True)
    torch.testing.assert_close(missing["logits"], expected["logits"])
    torch.testing.assert_close(without_valid["logits"], expected["logits"])
    assert torch.isfinite(missing["aux"]["s2"]).all()


def test_no_weight_decay_names_the_learned_queries():
    model = _segmenter(aux_heads=True)
    names = model.no_weight_decay()
    parameters = dict(model.named_parameters())
    assert names <= parameters.keys()
    assert {n for n in names if n.startswith("aux_heads.")} == {
        f"aux_heads.{key}.pool.pool.query" for key in tiny_config().encoder.modalities
    }
    assert all(n.endswith(".query") for n in names) and len(names) == 4 * 5 + 5


@pytest.mark.parametrize("head", ["uperfuse", "maestro"])
def test_a_tiny_segmenter_overfits_one_batch(head):
    model = _segmenter(head=head).train()
    batch, labels = _batch(), _labels()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = _loss(model(**batch)["logits"], labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize("head", ["uperfuse", "maestro"])
def test_the_segmenter_traces_as_one_graph_when_padding_is_known(head):
    """``model.compile()`` in fine-tuning gets one graph: the output dict breaks nothing."""
    model = _segmenter(head=head, aux_heads=True)
    explained = torch._dynamo.explain(model)(**_batch(), padded=False)
    assert explained.graph_break_count == 0, explained.break_reasons
