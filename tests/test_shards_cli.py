"""``shards`` CLI end to end on a tiny toy dataset: toy -> build -> verify -> stats, and failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from shards.cli import main
from shards.writer import DEFAULT_MODALITIES


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "toy"
    assert main(["toy", "--out", str(root), "--patches", "12", "--seed", "3"]) == 0
    return root


@pytest.fixture(scope="module")
def built(toy: Path) -> Path:
    out = toy.parent / "shards"
    code = main(
        [
            "build",
            "--root",
            str(toy),
            "--split",
            "train",
            "val",
            "--out",
            str(out),
            "--max-count",
            "3",
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


def test_build_writes_shards_and_manifest(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == ["train", "val"]
    train = manifest["splits"]["train"]
    assert train["totals"]["samples"] == 8 and train["totals"]["shards"] == 3
    assert train["modalities"] == [*DEFAULT_MODALITIES, "s2_mask"]
    assert sorted(p.name for p in built.glob("*.tar")) == [
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
        "val-000000.tar",
    ]


def test_verify_and_stats(built: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert main(["verify", str(built)]) == 0
    assert "OK: 4 shards checked" in caplog.text
    assert main(["stats", str(built), "--split", "train", "val", "--workers", "2"]) == 0
    stats = json.loads((built / "stats.json").read_text())
    assert stats["samples"] == 10
    assert stats["modalities"]["aerial"]["bands"] == ["R", "G", "B", "NIR"]
    assert all(0 < m < 255 for m in stats["modalities"]["aerial"]["mean"])
    assert "lc" not in stats["modalities"]


def test_rebuild_resumes_without_rewriting(toy: Path, built: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in built.glob("*.tar")}
    with caplog.at_level(logging.INFO):
        assert (
            main(
                [
                    "build",
                    "--root",
                    str(toy),
                    "--split",
                    "train",
                    "--out",
                    str(built),
                    "--max-count",
                    "3",
                    "--no-progress",
                ]
            )
            == 0
        )
    assert "0 written, 3 kept from an earlier run" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in built.glob("*.tar")} == before


def test_verify_fails_on_a_corrupt_shard(
    built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in built.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    shard = copy / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-20000])
    with caplog.at_level(logging.INFO):
        assert main(["verify", str(copy)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(line.startswith("FAIL val-000000.tar") for line in errors)
    assert any("sha256 mismatch" in line for line in errors)


def test_bad_input_exits_with_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert (
        main(["build", "--root", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--no-progress"])
        == 2
    )
    assert "split CSV not found" in caplog.text
    assert main(["stats", str(tmp_path)]) == 2
    assert "no manifest" in caplog.text


def test_console_entry_point(built: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shards.cli", "verify", str(built), "--split", "val", "--no-decode"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK: 1 shards checked" in result.stderr


# ------------------------------------------------------------------ user mistakes: one line, no debris


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_unknown_modality_is_one_line_listing_valid_keys(
    toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    assert (
        main(["build", "--root", str(toy), "--out", str(out), "--modalities", "sentinel2", "--no-progress"])
        == 2
    )
    [error] = _errors(caplog)
    assert "unknown modalities ['sentinel2']; valid keys are ['aerial', 'dem'" in error.getMessage()
    assert "\n" not in error.getMessage() and not error.exc_info
    assert not out.exists()


def test_verbose_adds_the_traceback(toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["-v", "build", "--root", str(toy), "--out", str(tmp_path / "o"), "--modalities", "x"]) == 2
    [error] = _errors(caplog)
    assert error.exc_info and error.exc_info[0] is not None


def test_toy_refuses_a_non_empty_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["toy", "--out", str(tmp_path), "--patches", "3"]) == 2
    [error] = _errors(caplog)
    assert "not an empty directory" in error.getMessage() and not error.exc_info
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_failed_toy_run_removes_the_directory_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maestro.data.toy.dataset as toy_dataset

    calls = {"n": 0}
    real = toy_dataset.write_patch

    def disk_full(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(toy_dataset, "write_patch", disk_full)
    assert main(["toy", "--out", str(tmp_path / "toy"), "--patches", "3"]) == 2
    assert not (tmp_path / "toy").exists()


def test_split_csv_with_several_splits_is_refused(
    toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    csv = toy / "split_flairhub" / "train.csv"
    assert (
        main(
            [
                "build",
                "--root",
                str(toy),
                "--out",
                str(out),
                "--split",
                "train",
                "val",
                "--split-csv",
                str(csv),
                "--no-progress",
            ]
        )
        == 2
    )
    [error] = _errors(caplog)
    assert "--split-csv" in error.getMessage() and "['train', 'val']" in error.getMessage()
    assert not out.exists()


def test_non_utf8_split_csv_names_the_file(
    toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = (toy / "split_flairhub" / "val.csv").read_text(encoding="utf-8")
    latin1 = tmp_path / "val-latin1.csv"
    latin1.write_bytes(source.replace("\n", ",# répertoire\n", 1).encode("latin-1"))
    assert (
        main(
            [
                "build",
                "--root",
                str(toy),
                "--out",
                str(tmp_path / "out"),
                "--split",
                "val",
                "--split-csv",
                str(latin1),
                "--no-progress",
            ]
        )
        == 2
    )
    [error] = _errors(caplog)
    message = error.getMessage()
    assert "val-latin1.csv" in message and "not UTF-8" in message and "re-save it as UTF-8" in message
    assert "line 1" in message and not error.exc_info


def test_build_failing_on_its_first_patch_leaves_no_out_dir(
    toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "broken.csv"
    csv.write_text("patch_id,dem\nD006-2020_XX-1_0-0,D006-2020_DEM/XX-1/nowhere.tif\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "build",
                "--root",
                str(toy),
                "--out",
                str(out),
                "--split",
                "test",
                "--split-csv",
                str(csv),
                "--modalities",
                "dem",
                "--no-progress",
            ]
        )
        == 2
    )
    [error] = _errors(caplog)
    assert "D006-2020_XX-1_0-0" in error.getMessage() and "file not found" in error.getMessage()
    assert not out.exists()


def test_unknown_dataset_or_a_modality_it_lacks_is_one_error_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.ERROR)
    assert main(["toy", "--dataset", "flair3", "--out", str(tmp_path / "t")]) == 2
    [error] = _errors(caplog)
    assert "unknown dataset 'flair3'; datasets are ['custom', 'flair-hub', 'flair2']" in error.getMessage()
    assert not error.exc_info
    assert not (tmp_path / "t").exists()
    caplog.clear()
    args = ["build", "--dataset", "flair2", "--root", str(tmp_path), "--out", str(tmp_path / "s")]
    assert main([*args, "--modalities", "aerial", "dem", "flair2"]) == 2
    assert "dataset 'flair2' has no ['dem']" in caplog.text
    caplog.clear()
    assert main(["toy", "--dataset", "flair2", "--out", str(tmp_path / "t"), "--patches", "3"]) == 2
    assert "--patches must be at least 4 for a FLAIR #2 toy" in caplog.text
