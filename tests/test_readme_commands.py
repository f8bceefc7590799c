"""README's fine-tuning, publishing and mapping commands, run as typed on a small example tree.

Every line of the ```bash blocks of the sections in :data:`SECTIONS` (backslash continuations
joined, comments dropped) runs through its console script's ``main(argv)``, in README order, in a
fresh working directory per section, laid out as the repository after `make example`
(``example_tree``: tiny pretraining and fine-tuning runs, a few shards). A README that drifts from
the code fails here, showing the command and its output.

The rule for what the test adds to a command: words are only APPENDED after the command as
typed, never changed or removed, and they only shrink the run to test scale (tiny batches, one
epoch of two batches, CPU, no loader workers, tiny model widths, ``--device cpu``) or describe the
reduced checkpoint that stands in for IGN's (``--image-size``, ``--decoder-heads``): see
:func:`appended`.

What stands in for what the example does not hold (:func:`stand_ins`): an offline Hugging Face
cache (``HF_HUB_OFFLINE=1``) with ``org/name`` (main and v1.0: the encoder of
``example/runs/pretrain``), ``org/maestro-lc`` (the segmenter of ``example/runs/finetune/lc``) and
``IGNF/MAESTRO_FLAIR-HUB_base`` (the reduced reference checkpoint of ``tests/fixtures/maestro_ref``,
also linked at ``path/to/reference.ckpt``); a toy zone at ``zones/D033``; and, for the upload
lines of ``maestro publish``, the Hub's HTTP endpoints played by ``test_hub_http.MockHub``.
Commands that need more (your own data) are listed in :data:`NEEDS` with the words that say so
beside them in the README.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx2
import pytest
import yaml
from baseline_fixtures import TINY_OPTIONS
from conftest import FINETUNE_ENCODER, dotted
from huggingface_hub import constants
from huggingface_hub.utils import _http
from reference_fixture import CHECKPOINT, DECODER_HEADS, OVERRIDES, require_fixture
from test_hub_http import MockHub

import finetune.cli
import gapfill.cli
import maestro.cli
import predict.cli
import shards.cli
from finetune.config import FinetuneConfig
from maestro.config import to_dict
from maestro.data.toy.zone import write_toy_zone
from maestro.hub.publish import publish

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = (
    "Your own dataset",
    "Fine-tuning",
    "Pretrained weights",
    "IGN's published weights",
    "Mapping a whole zone",
    "Mapping many zones (a department, a country)",
    "Cloud removal",
)
PROGRAMS: dict[str, Callable[[list[str]], int]] = {
    "finetune": finetune.cli.main,
    "gapfill": gapfill.cli.main,
    "maestro": maestro.cli.main,
    "predict": predict.cli.main,
    "shards": shards.cli.main,
}
NEEDS = {
    "finetune --task lc --init runs/pretrain data.train=/data/shards data.val=/data/shards "
    "data.test=/data/shards": "your data, your run",
}
"""Commands no stand-in runs -> the words beside them in the README that say what they need."""

TRAIN_SHRINK = [
    "data.batch_size=2",
    "data.num_workers=0",
    "data.batches_per_epoch=2",
    "data.val_batches=1",
    "data.shuffle_buffer=4",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "model.decoder_channels=32",
    "eval.num_figures=1",
]
EVAL_SHRINK = [
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "eval.num_figures=1",
]
"""``--eval-only`` applies only data, eval and device settings (anything else is refused)."""
TINY_ENCODER = dotted(
    {
        f"model.encoder.{key}": FINETUNE_ENCODER[key]
        for key in ("width", "depth", "inter_depth", "grid_size", "overrides")
    }
)
"""``--init random``: the test encoder's width, depth and patch sizes; its size stays as typed."""
REDUCED_REFERENCE = [
    *(word for key, sizes in OVERRIDES.items() for word in ("--image-size", f"{key}={sizes['image_size']}")),
    *("--decoder-heads", str(DECODER_HEADS)),
]
"""The facts of the reduced reference checkpoint that stands in for IGN's (see reference_fixture)."""
COMMIT = {
    "org/name": ("a" * 40, "b" * 40),
    "org/maestro-lc": ("c" * 40,),
    "IGNF/MAESTRO_FLAIR-HUB_base": ("d" * 40,),
}
CARD = "---\nlicense: etalab-2.0\n---\n# MAESTRO base (test stand-in)\n"


def readme_sections() -> dict[str, str]:
    """Heading (## or ###) -> its text up to the next heading, headings inside code blocks ignored."""
    sections: dict[str, list[str]] = {}
    current, fenced = None, False
    for line in (ROOT / "README.md").read_text().splitlines():
        fenced ^= line.startswith("```")
        heading = re.match(r"#{2,3} (.+)", line)
        if heading and not fenced:
            current = heading.group(1).strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {title: "\n".join(lines) for title, lines in sections.items()}


def readme_commands(section: str) -> list[tuple[str, list[str]]]:
    """(the README line, continuations joined; its argv without comments) per command of the
    section's ```bash blocks."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme_sections()[section], re.S):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append((line, argv))
    return commands


def appended(argv: Sequence[str]) -> list[str]:
    """The words added after a command as typed (module docstring: shrink to test scale, or
    describe the reduced reference stand-in)."""
    program = argv[0]
    if program == "finetune":
        if "--eval-only" in argv:
            return EVAL_SHRINK
        words = list(TRAIN_SHRINK)
        if "swin-utae" in argv:
            words += dotted({"model.baseline": to_dict(TINY_OPTIONS)})
        if "--init" in argv and argv[argv.index("--init") + 1] == "random":
            words += TINY_ENCODER
        return words
    if program == "predict":
        return ["--device", "cpu", "--no-progress"]
    if program == "gapfill":
        return [word for word in TRAIN_SHRINK if not word.startswith("model.")]
    if program == "shards" and argv[1] == "toy":
        return ["--patches", "4"]
    if program == "maestro" and argv[1] == "import-reference":
        return REDUCED_REFERENCE
    return []


# ------------------------------------------------------------------------------- stand-ins
def _snapshot(cache: Path, repo: str, commit: str, ref: str) -> Path:
    """``models--org--name/snapshots/<commit>`` with ``refs/<ref>``, as huggingface_hub lays them out."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / ref).write_text(commit)
    return storage / "snapshots" / commit


@pytest.fixture(scope="module")
def stand_ins(example_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What stands in for the placeholders of the README's commands, read-only: ``hub``, an offline
    Hugging Face cache; ``reference.ckpt``; ``D033``, a toy zone."""
    require_fixture()
    folder = tmp_path_factory.mktemp("stand_ins")
    cache, runs = folder / "hub", example_tree / "example" / "runs"
    for commit, ref in zip(COMMIT["org/name"], ("main", "v1.0"), strict=True):
        publish(runs / "pretrain", "org/name", dry_run=True, out=_snapshot(cache, "org/name", commit, ref))
    lc = _snapshot(cache, "org/maestro-lc", COMMIT["org/maestro-lc"][0], "main")
    publish(runs / "finetune" / "lc", "org/maestro-lc", dry_run=True, out=lc)
    ign = _snapshot(cache, "IGNF/MAESTRO_FLAIR-HUB_base", COMMIT["IGNF/MAESTRO_FLAIR-HUB_base"][0], "main")
    ign.mkdir(parents=True)
    (ign / "maestro.ckpt").symlink_to(CHECKPOINT)
    (ign / "README.md").write_text(CARD)
    (folder / "reference.ckpt").symlink_to(CHECKPOINT)
    write_toy_zone(folder / "D033", size_m=200.0, seed=1)
    return folder


@pytest.fixture
def work(example_tree: Path, stand_ins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory: the example tree (its fine-tuning run copied, since ``--eval-only``
    writes into it), the stand-ins at the README's placeholder paths, the offline Hub cache and a
    MAESTRO cache of its own."""
    work = tmp_path / "repo"
    (work / "example" / "runs" / "finetune").mkdir(parents=True)
    for entry in ("configs", "example/flairhub", "example/shards", "example/runs/pretrain"):
        (work / entry).symlink_to((example_tree / entry).resolve())
    lc = "example/runs/finetune/lc"
    shutil.copytree(example_tree / lc, work / lc, symlinks=True)
    (work / "path" / "to").mkdir(parents=True)
    (work / "path" / "to" / "reference.ckpt").symlink_to(stand_ins / "reference.ckpt")
    (work / "zones").mkdir()
    (work / "zones" / "D033").symlink_to(stand_ins / "D033")
    cache = stand_ins / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MAESTRO_CACHE", str(tmp_path / "maestro-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-token"))
    monkeypatch.chdir(work)
    return work


@contextlib.contextmanager
def mocked_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockHub]:
    """Online, with a token, every HTTP request answered by :class:`MockHub` (the upload lines)."""
    mock = MockHub()
    with monkeypatch.context() as patch:
        patch.setenv("HF_TOKEN", "hf_test_token")
        patch.delenv("HF_HUB_OFFLINE")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        _http.set_client_factory(
            lambda: httpx2.Client(
                transport=httpx2.MockTransport(mock),
                event_hooks={"request": [_http.hf_request_event_hook]},
                follow_redirects=True,
            )
        )
        try:
            yield mock
        finally:
            _http.set_client_factory(_http.default_client_factory)


def is_upload(argv: Sequence[str]) -> bool:
    return argv[:2] == ["maestro", "publish"] and "--dry-run" not in argv


def run_section(section: str, monkeypatch, capsys, caplog) -> list[str]:
    """Run the section's commands in order; the commands run, or a failure showing the output."""
    ran = []
    for _line, argv in readme_commands(section):
        command = shlex.join(argv)
        if command in NEEDS:
            continue
        words = appended(argv)
        capsys.readouterr()
        caplog.clear()
        started = time.time()
        with mocked_hub(monkeypatch) if is_upload(argv) else contextlib.nullcontext() as hub:
            code = PROGRAMS[argv[0]]([*argv[1:], *words])
        out = capsys.readouterr()
        shown = f"$ {command}  [+ {' '.join(words)}]\nexit {code}\n{out.out[-3000:]}\n{out.err[-3000:]}\n{caplog.text[-6000:]}"
        assert code == 0, shown
        check_outputs(argv, started, hub, shown)
        ran.append(command)
    return ran


def check_outputs(argv: Sequence[str], started: float, hub: MockHub | None, shown: str) -> None:
    """What the command says it writes is there, written now."""
    if "--out" in argv:
        out = Path(argv[argv.index("--out") + 1])
        assert out.exists() and out.stat().st_mtime >= started - 1, shown
    if argv[0] == "finetune":
        found = [p for p in Path().glob("**/test/metrics.json") if p.stat().st_mtime >= started - 1]
        assert found, f"no fresh test/metrics.json\n{shown}"
    if hub is not None:
        commits = hub.to("/commit/")
        assert len(commits) == 1, shown
        files = set(hub.committed(commits[0]))
        assert files == {"config.json", "model.safetensors", "README.md"}, shown


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_commands_run_on_the_example(section, work, monkeypatch, capsys, caplog):
    with caplog.at_level("INFO"):
        ran = run_section(section, monkeypatch, capsys, caplog)
    assert ran, f"no command ran in README section {section!r}"


def test_commands_that_need_more_than_the_example_say_so_beside_them():
    lines = {shlex.join(argv): line for section in SECTIONS for line, argv in readme_commands(section)}
    for command, need in NEEDS.items():
        assert command in lines, f"{command!r} is no longer in the README: drop it from NEEDS"
        comment = lines[command].split("#", 1)[-1]
        assert need in comment, f"README: {command!r} should say beside it that it needs {need!r}"


def test_the_fine_tuning_section_says_what_scale_a_command_runs_at():
    """Without ``--config`` a command runs the full recipe (over an hour on 2 CPU cores): the README
    says so next to the commands, with the recipe's and the example config's actual numbers."""
    text = " ".join(readme_sections()["Fine-tuning"].split())
    default = FinetuneConfig()
    toy = yaml.safe_load((ROOT / "configs" / "finetune" / "toy.yaml").read_text())
    assert f"{default.trainer.max_epochs} epochs at batch {default.data.batch_size}" in text
    assert f"{toy['trainer']['max_epochs']} epochs at batch {toy['data']['batch_size']}" in text
    assert "--config configs/finetune/toy.yaml" in text
