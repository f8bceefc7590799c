from dataclasses import dataclass, field

import pytest
import yaml
from lightning.pytorch.utilities.exceptions import SIGTERMException

from maestro.errors import ConfigError, DataError
from maestro.training.cli import overrides_from, resume_from, run_cli, stage_parser
from maestro.training.config import TrainerConfig


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

    def crashing(config, resume):
        raise RuntimeError("a bug, not a user error")

    with pytest.raises(RuntimeError):
        run_cli(parser, _Config, crashing, ["--config", str(config_file)])
