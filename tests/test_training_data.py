from maestro.models.config import EncoderConfig
from maestro.training.config import DataConfig
from maestro.training.data import ShardDataModule, preprocess_for

ENCODER = EncoderConfig(
    modalities=("aerial", "s2"),
    overrides={"aerial": {"bands": ["R", "G", "B"], "patch_size": 128}, "s2": {"num_dates": 3, "patch_size": 5}},
    size="tiny", width=64, depth=2, inter_depth=1, grid_size=20,
)


def test_preprocessing_follows_the_model_specs():
    preprocess = preprocess_for(ENCODER.specs, cloud_avoidance=False)
    assert preprocess.modalities == ("aerial", "s2")
    assert preprocess.spec("aerial").bands == ("R", "G", "B")
    assert preprocess.spec("s2").num_dates == 3
    assert preprocess.spec("s2").bands == ENCODER.specs["s2"].bands
    assert preprocess.cloud_avoidance is False


def test_members_default_to_inputs_and_their_companions_and_can_add_labels():
    data = DataConfig(train="unused")
    preprocess = preprocess_for(ENCODER.specs)
    assert ShardDataModule(data, preprocess).members == ("aerial", "s2", "s2_mask")
    assert ShardDataModule(data, preprocess, members=["aerial", "s2", "s2_mask", "lc"]).members[-1] == "lc"


def test_batches_have_the_shapes_the_model_expects(toy_shards):
    data = DataConfig(train=str(toy_shards), val=str(toy_shards), batch_size=2, num_workers=0,
                      batches_per_epoch=1, shuffle_buffer=4)
    module = ShardDataModule(data, preprocess_for(ENCODER.specs))
    batch = next(iter(module.train_dataloader()))
    assert tuple(batch["inputs"]["aerial"].shape) == (2, 1, 3, 512, 512)
    assert tuple(batch["inputs"]["s2"].shape[:3]) == (2, 3, ENCODER.specs["s2"].num_bands)
    assert all(b["inputs"]["aerial"].shape[1:] == (1, 3, 512, 512) for b in module.val_dataloader())
