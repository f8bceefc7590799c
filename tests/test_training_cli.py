from dataclasses import dataclass, field

import pytest
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from finetune import cli as finetune_cli
from maestro.errors import ConfigError, DataError
from maestro.training.cli import overrides_from, parse_stage_args, resume_from, run_cli, stage_parser
from maestro.training.config import TrainerConfig
from pretrain import cli as pretrain_cli


@dataclass(frozen=True)
class _Config:
    name: str = "run"
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def test_shortcut_flags_become_trainer_overrides_after_the_positional_ones():
    args = stage_parser("stage", None).parse_args(
        [
            "--config",
            "c.yaml",
            "name=x",
            "--devices",
            "0,1",
            "--num-nodes",
            "2",
            "--strategy",
            "ddp",
            "--output-dir",
            "out",
            "--resume",
        ]
    )
    assert overrides_from(args) == [
        "name=x",
        "trainer.devices=0,1",
        "trainer.num_nodes=2",
        "trainer.strategy=ddp",
        "trainer.output_dir=out",
    ]
    assert resume_from(args) == "last"


@pytest.mark.parametrize(
    ("argv", "resume", "overrides"),
    [
        (["--resume", "trainer.max_epochs=8"], "last", ["trainer.max_epochs=8"]),  # not a checkpoint path
        (["trainer.max_epochs=8", "--resume"], "last", ["trainer.max_epochs=8"]),
        (["--resume-from", "x.ckpt", "a=1"], "x.ckpt", ["a=1"]),
        (["a=1"], None, ["a=1"]),
    ],
)
def test_resume_is_a_flag_and_a_checkpoint_is_named_by_resume_from(argv, resume, overrides):
    args = stage_parser("stage", None).parse_args(["--config", "c.yaml", *argv])
    assert (resume_from(args), overrides_from(args)) == (resume, overrides)


def test_run_cli_loads_the_config_and_maps_user_errors_to_exit_2(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"name": "base"}))
    parser = stage_parser("stage", None)
    parser.add_argument("--name")
    seen = []

    def run(config, resume):
        seen.append((config, resume))

    assert (
        run_cli(
            parser,
            _Config,
            run,
            ["--config", str(config_file), "--devices", "2", "--resume-from", "x.ckpt", "--name", "flag"],
            extra_overrides=lambda args: [f"name={args.name}"],
        )
        == 0
    )
    assert seen == [(_Config(name="flag", trainer=TrainerConfig(devices=2)), "x.ckpt")]
    assert run_cli(parser, _Config, run, ["--config", str(config_file), "trainer.max_stesp=3"]) == 2
    assert run_cli(parser, _Config, run, ["--config", str(tmp_path / "missing.yaml")]) == 2
    for error in (ConfigError("bad"), DataError("bad"), FileExistsError("bad"), FileNotFoundError("bad")):

        def failing(config, resume, error=error):
            raise error

        assert run_cli(parser, _Config, failing, ["--config", str(config_file)]) == 2

    def preempted(config, resume):
        raise SIGTERMException()  # a SystemExit: uncaught, the job would exit 0

    assert run_cli(parser, _Config, preempted, ["--config", str(config_file)]) == 143

    def exiting(config, resume):
        raise SystemExit(3)  # any other exit is the run's own, not a preemption

    with pytest.raises(SystemExit) as exited:
        run_cli(parser, _Config, exiting, ["--config", str(config_file)])
    assert exited.value.code == 3

    def crashing(config, resume):
        raise RuntimeError("a bug, not a user error")

    with pytest.raises(RuntimeError):
        run_cli(parser, _Config, crashing, ["--config", str(config_file)])


@pytest.mark.parametrize(
    "argv",
    [
        ["a.b=1", "c=x", "--resume", "--devices", "2", "-v"],  # overrides before the flags
        ["--resume", "a.b=1", "--devices", "2", "c=x", "-v"],  # between them
        ["--resume", "--devices", "2", "-v", "a.b=1", "c=x"],  # after them
        ["a.b=1", "--resume", "-v", "--devices", "2", "c=x"],
    ],
)
@pytest.mark.parametrize(
    "build", [pretrain_cli.build_parser, finetune_cli.build_parser], ids=["pretrain", "finetune"]
)
def test_overrides_may_come_before_between_or_after_the_flags_of_every_stage(build, argv):
    args = parse_stage_args(build(), ["--config", "c.yaml", *argv])
    assert overrides_from(args) == ["a.b=1", "c=x", "trainer.devices=2"]
    assert resume_from(args) == "last" and args.verbose


@pytest.mark.parametrize(
    "argv",
    [
        ["model.encoder.size=small", "--modalities", "aerial", "data.train=x", "--probe", "--task", "lc"],
        ["--probe", "model.encoder.size=small", "--task", "lc", "data.train=x", "--modalities", "aerial"],
        ["--task", "lc", "--modalities", "aerial", "--probe", "model.encoder.size=small", "data.train=x"],
    ],
)
def test_the_fine_tuning_flags_mix_with_overrides(argv):
    args = parse_stage_args(finetune_cli.build_parser(), argv)
    assert args.overrides == ["model.encoder.size=small", "data.train=x"]
    assert finetune_cli.flag_overrides(args) == [
        "task.name=lc",
        "model.modalities=[aerial]",
        "model.probe=true",
        "model.head=linear",  # --probe is a linear probe unless --head names another head
    ]


def test_run_cli_takes_overrides_before_a_flag(tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"name": "base"}))
    seen = []
    argv = ["--config", str(config_file), "name=early", "--resume", "trainer.max_steps=1"]
    assert (
        run_cli(
            stage_parser("stage", None), _Config, lambda config, resume: seen.append((config, resume)), argv
        )
        == 0
    )
    assert seen == [(_Config(name="early", trainer=TrainerConfig(max_steps=1)), "last")]
