"""Fine-tuning configs that cannot work are refused before anything runs: exit 2 and one log line.

Every case goes through ``finetune.cli.main`` as a user would start it; ``finetune.cli.run`` is
replaced by a function that fails the test, so a refusal has to come from the configuration
itself, before any weights, shards or run directory are touched.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import yaml

from finetune import cli
from finetune.config import FinetuneConfig
from maestro.config import load_config
from maestro.errors import ConfigError


@pytest.fixture
def config_file(finetune_raw, tmp_path: Path) -> Path:
    """A valid tiny config (random init, explicit encoder) written as YAML."""
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(finetune_raw(tmp_path / "run")))
    return path


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the stage gets as far as running."""

    def forbidden(*args, **kwargs):
        raise AssertionError("finetune.cli.run was reached: the config error came too late")

    monkeypatch.setattr(cli, "run", forbidden)


def _errors(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["task.name=landuse"], "unknown task 'landuse'; tasks are ['custom', 'flair2', 'lc', 'lpis']"),
        (["--task", "lpis", "--level", "4"], "task 'lpis' has level(s) [1, 2, 3], not 4"),
        (["--task", "lc", "--level", "2"], "task 'lc' has level(s) [1], not 2"),
        (["--task", "lpis", "--level", "0"], "not 0"),
        (["model.init=random", "model.encoder=null"], "init: random needs an encoder section"),
        (["--head", "segformer"], "unknown head 'segformer'"),
        (
            ["eval.missing_modalities=[s1_asc, spot]"],
            "eval.missing_modalities ['spot'] are not inputs of the model",
        ),
        (["model.modalities=[]"], "at least one input modality"),
    ],
    ids=[
        "unknown-task",
        "lpis-level-4",
        "lc-level-2",
        "level-0",
        "random-without-encoder",
        "unknown-head",
        "missing-not-an-input",
        "no-inputs",
    ],
)
def test_bad_configs_exit_2_with_one_clear_line_before_anything_runs(
    config_file, no_run, caplog, tmp_path, arguments, message
):
    caplog.set_level(logging.INFO)
    assert cli.main(["--config", str(config_file), *arguments]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert errors[0].startswith("invalid configuration:") and message in errors[0], errors[0]
    assert not (tmp_path / "run").exists()


def test_an_unknown_task_flag_is_refused_by_the_parser_with_the_choices(config_file, no_run, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--config", str(config_file), "--task", "landuse"])
    assert info.value.code == 2
    assert "invalid choice: 'landuse'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        (["task.name=lc", "task.level=1"], True),
        (["task.name=lpis", "task.level=3"], True),
        (["task.name=lc", "task.level=2"], False),
        (["task.name=lpis", "task.level=4"], False),
    ],
)
def test_task_levels_are_checked_when_the_config_is_built(finetune_config, tmp_path, overrides, valid):
    if valid:
        config = finetune_config(tmp_path, *overrides)
        assert config.task.target.level == config.task.level
    else:
        with pytest.raises(ConfigError, match=r"has level\(s\)"):
            finetune_config(tmp_path, *overrides)


def test_missing_modalities_are_checked_against_the_inputs_actually_used(config_file, no_run, caplog):
    # model.encoder lists s1_asc, but model.modalities leaves it out: still not an input.
    caplog.set_level(logging.INFO)
    arguments = ["model.modalities=[aerial, s2]", "eval.missing_modalities=[s1_asc]"]
    assert cli.main(["--config", str(config_file), *arguments]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and "['s1_asc'] are not inputs of the model ['aerial', 's2']" in errors[0], errors


def test_missing_modalities_are_checked_against_an_encoder_taken_from_init(
    finetune_raw, tiny_pretrain_run, tmp_path, monkeypatch, caplog
):
    """With the encoder from ``--init`` the check can only run once the init is read; it still
    comes before any shard is read or any run directory is made."""
    import finetune.stage as stage

    def forbidden(*args, **kwargs):
        raise AssertionError("shards were read")

    monkeypatch.setattr(stage, "check_shards", forbidden)
    raw = finetune_raw(tmp_path / "run")
    del raw["model"]["encoder"]
    raw["model"]["init"] = str(tiny_pretrain_run)
    raw["eval"]["missing_modalities"] = ["spot"]
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(raw))
    caplog.set_level(logging.INFO)
    assert cli.main(["--config", str(path)]) == 2
    errors = _errors(caplog)
    inputs = "['aerial', 'dem', 's2', 's1_asc', 's1_des']"
    assert len(errors) == 1 and f"['spot'] are not inputs of the model {inputs}" in errors[0], errors
    assert not (tmp_path / "run").exists()


def test_the_cli_flags_become_the_documented_overrides(config_file, monkeypatch):
    seen = {}

    def fake_run(config, resume=None, eval_only=False, callbacks=()):
        seen.update(config=config, resume=resume, eval_only=eval_only)

    monkeypatch.setattr(cli, "run", fake_run)
    assert (
        cli.main(
            [
                "--config",
                str(config_file),
                "--task",
                "lpis",
                "--level",
                "3",
                "--head",
                "maestro",
                "--modalities",
                "aerial,s2",
                "--probe",
                "--save-predictions",
                "--eval-only",
            ]
        )
        == 0
    )
    config = seen["config"]
    assert (config.task.name, config.task.level, config.model.head) == ("lpis", 3, "maestro")
    assert config.model.modalities == ("aerial", "s2")
    assert config.model.probe and config.eval.save_predictions and seen["eval_only"]


def test_shipped_finetune_configs_load():
    for path in sorted((Path(__file__).parent.parent / "configs" / "finetune").glob("*.yaml")):
        config = load_config(FinetuneConfig, path, ["task.name=lpis", "task.level=2"])
        assert config.data.train and config.data.test, path


def test_an_optim_override_keeps_the_rest_of_the_fine_tuning_recipe():
    config = load_config(FinetuneConfig, None, ["optim.weight_decay=0.05"])
    assert (config.optim.base_lr, config.optim.end_fraction, config.optim.weight_decay) == (1e-5, 0.5, 0.05)


def test_the_example_config_changes_only_the_optim_keys_it_names():
    path = Path(__file__).parent.parent / "configs" / "finetune" / "toy.yaml"
    optim = load_config(FinetuneConfig, path, ["task.name=lc"]).optim
    recipe = FinetuneConfig().optim
    assert (optim.base_lr, optim.end_fraction) == (1e-3, 0.0)  # the two keys toy.yaml sets
    assert dataclasses.replace(optim, base_lr=recipe.base_lr, end_fraction=recipe.end_fraction) == recipe


def test_overrides_may_come_before_between_and_after_the_fine_tuning_flags(config_file, monkeypatch):
    seen = {}
    monkeypatch.setattr(
        cli, "run", lambda config, resume=None, eval_only=False: seen.update(c=config, e=eval_only)
    )
    argv = ["--config", str(config_file), "data.batch_size=3", "--modalities", "aerial"]
    assert cli.main([*argv, "trainer.max_epochs=5", "--eval-only", "eval.num_figures=1", "--probe"]) == 0
    config = seen["c"]
    assert (config.data.batch_size, config.trainer.max_epochs, config.eval.num_figures) == (3, 5, 1)
    assert config.model.modalities == ("aerial",) and config.model.probe and seen["e"]
