"""Every command answers ``--help``, and refuses a user mistake, before torch loads.

Each case starts a command's entry point in a fresh interpreter, as its console script does, and
reads which heavy libraries that process imported by the time it exited: none of torch, Lightning
and timm, so ``--help`` and the one-line error of a mistake cost a Python start-up, not the many
seconds of loading them. The wall-clock bound only catches gross regressions on a busy machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
SCRIPTS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
"""Console script name -> ``module:function``, as installed."""
HEAVY = ("torch", "lightning", "timm")
BOUND_S = 15.0
"""Generous: a start-up without torch takes about a second; with it, 5 to 20 s."""
MARKER = "HEAVY-MODULES "

LAUNCH = """\
import atexit, json, sys
atexit.register(lambda: sys.stderr.write("\\n{marker}" + json.dumps([m for m in {heavy!r} if m in sys.modules]) + "\\n"))
from {module} import {function}
sys.exit({function}())
"""
"""What a console script runs (``sys.argv`` carries the arguments), plus the report at exit."""


@dataclass(frozen=True)
class Started:
    returncode: int
    stdout: str
    stderr: str
    heavy: list[str]
    seconds: float


def start(command: str, *args: str, cwd: Path) -> Started:
    module, function = SCRIPTS[command].split(":")
    code = LAUNCH.format(marker=MARKER, heavy=HEAVY, module=module, function=function)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )
    seconds = time.perf_counter() - began
    stderr, _, report = done.stderr.rpartition(MARKER)
    assert report, f"{command} {args}: no report at exit; stderr:\n{done.stderr}"
    return Started(done.returncode, done.stdout, stderr.strip(), json.loads(report), seconds)


HELP = [(name,) for name in sorted(SCRIPTS)] + [
    ("shards", "toy"),
    ("shards", "build"),
    ("maestro", "publish"),
    ("maestro", "import-reference"),
]


@pytest.mark.parametrize("command", HELP, ids=" ".join)
def test_help_imports_no_torch(command, tmp_path):
    started = start(*command, "--help", cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith(f"usage: {command[0]}"), started.stdout[:200]
    assert started.heavy == [], f"`{' '.join(command)} --help` imported {started.heavy}"
    assert started.seconds < BOUND_S, f"`{' '.join(command)} --help` took {started.seconds:.1f} s"


def test_every_console_script_is_covered():
    assert set(SCRIPTS) == {"shards", "pretrain", "finetune", "predict", "gapfill", "maestro"}


@pytest.fixture
def pretrain_yaml() -> Path:
    return ROOT / "configs" / "pretrain" / "toy.yaml"


@pytest.fixture
def finetune_yaml() -> Path:
    return ROOT / "configs" / "finetune" / "toy.yaml"


@pytest.fixture
def predict_paths(tmp_path) -> dict[str, Path]:
    """A zone folder, a folder that looks like a fine-tuning run and an existing map: enough for
    the arguments to be checked, nothing a model could be loaded from."""
    zone, run = tmp_path / "zone", tmp_path / "run"
    zone.mkdir()
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"task": {"name": "lc"}}))
    (run / "best.ckpt").write_bytes(b"")
    existing = tmp_path / "earlier.tif"
    existing.write_bytes(b"an earlier map")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    return {"zone": zone, "run": run, "existing": existing, "file": tmp_path / "notes.txt"}


USER_ERRORS = {
    "pretrain-missing-config": (
        "pretrain",
        ["--config", "{tmp}/absent.yaml"],
        "absent.yaml does not exist",
    ),
    "pretrain-unknown-key": (
        "pretrain",
        ["--config", "{pretrain}", "model.encoder.sise=small"],
        "sise",
    ),
    "pretrain-bad-flag-value": ("pretrain", ["--config", "{pretrain}", "--num-nodes", "two"], "invalid int"),
    "pretrain-bad-value": ("pretrain", ["--config", "{pretrain}", "trainer.devices=many"], "devices"),
    "finetune-missing-config": ("finetune", ["--config", "{tmp}/absent.yaml"], "absent.yaml does not exist"),
    "gapfill-unknown-key": ("gapfill", ["model.held_out_fraction=1.5"], "held_out_fraction: 1.5 must be in"),
    "gapfill-missing-config": ("gapfill", ["--config", "{tmp}/absent.yaml"], "absent.yaml does not exist"),
    "finetune-unknown-key": (
        "finetune",
        ["--config", "{finetune}", "--task", "lc", "optim.base_lrr=1"],
        "base_lrr",
    ),
    "finetune-bad-level": ("finetune", ["--config", "{finetune}", "--task", "lpis", "--level", "4"], "not 4"),
    "finetune-unknown-modality": (
        "finetune",
        ["--config", "{finetune}", "--task", "lc", "--modalities", "aerial,sentinel9"],
        "unknown modality 'sentinel9'",
    ),
    "finetune-unknown-task": ("finetune", ["--task", "landuse"], "invalid choice: 'landuse'"),
    "predict-existing-out": (
        "predict",
        ["--model", "{run}", "--zone", "{zone}", "--out", "{existing}"],
        "already exist",
    ),
    "predict-out-not-tif": (
        "predict",
        ["--model", "{run}", "--zone", "{zone}", "--out", "{tmp}/map.png"],
        "give a .tif path",
    ),
    "predict-out-under-a-file": (
        "predict",
        ["--model", "{run}", "--zone", "{zone}", "--out", "{file}/map.tif"],
        "is a file",
    ),
    "predict-missing-zone": (
        "predict",
        ["--model", "{run}", "--zone", "{tmp}/absent", "--out", "{tmp}/map.tif"],
        "no such directory",
    ),
    "predict-missing-model": (
        "predict",
        ["--model", "{tmp}/absent", "--zone", "{zone}", "--out", "{tmp}/map.tif"],
        "no such run directory or model folder",
    ),
    "predict-bad-overlap": (
        "predict",
        ["--model", "{run}", "--zone", "{zone}", "--out", "{tmp}/map.tif", "--overlap", "1.5"],
        "--overlap must be in [0, 1)",
    ),
    "predict-bad-device": (
        "predict",
        ["--model", "{run}", "--zone", "{zone}", "--out", "{tmp}/map.tif", "--device", "tpu"],
        "--device must be cpu or cuda",
    ),
    "predict-zones-missing": (
        "predict",
        ["--model", "{run}", "--zones", "{tmp}/absent", "--out", "{tmp}/maps"],
        "no such file or directory",
    ),
    "predict-zones-out-a-tif": (
        "predict",
        ["--model", "{run}", "--zones", "{tmp}", "--out", "{tmp}/maps.tif"],
        "--out is a folder",
    ),
    "shards-unknown-modality": (
        "shards",
        ["build", "--root", "{tmp}", "--out", "{tmp}/shards", "--modalities", "sentinel2", "--no-progress"],
        "unknown modalities ['sentinel2']",
    ),
    "shards-no-manifest": ("shards", ["stats", "{tmp}"], "no manifest"),
    "maestro-publish-without-repo": ("maestro", ["publish", "{run}"], "required: --repo"),
    "maestro-bad-image-size": (
        "maestro",
        ["import-reference", "{tmp}/ref.ckpt", "--out", "{tmp}/ref", "--image-size", "aerial"],
        "expected MODALITY=INTEGER",
    ),
}


@pytest.mark.parametrize("case", sorted(USER_ERRORS))
def test_a_user_error_is_one_line_before_torch_loads(
    case, tmp_path, pretrain_yaml, finetune_yaml, predict_paths
):
    command, template, message = USER_ERRORS[case]
    places = {"tmp": tmp_path, "pretrain": pretrain_yaml, "finetune": finetune_yaml, **predict_paths}
    args = [part.format(**places) for part in template]
    started = start(command, *args, cwd=tmp_path)
    assert started.returncode == 2, started.stderr
    errors = [line for line in started.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], started.stderr
    assert "Traceback" not in started.stderr
    assert started.heavy == [], f"{case}: the refusal imported {started.heavy}"
    assert started.seconds < BOUND_S, f"{case}: the refusal took {started.seconds:.1f} s"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "shards").exists()


def test_the_launcher_sees_torch_when_a_command_imports_it(tmp_path):
    """The report is not vacuous: a command that does load torch is seen doing so."""
    code = LAUNCH.format(marker=MARKER, heavy=HEAVY, module="torch", function="get_num_threads")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(done.stderr.rpartition(MARKER)[2]) == ["torch"]
