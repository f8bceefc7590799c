"""bench/gapfill_downstream.py --smoke: the three filled sets are written and a crop-type model is
fine-tuned and tested on each (a tiny pretraining run, a tiny gap-filling network, the toy shards)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from gapfill_fixtures import save_tiny_gapfill

from shards.manifest import read_manifest

pytestmark = pytest.mark.usefixtures("single_thread")
BENCH = Path(__file__).resolve().parents[1] / "bench" / "gapfill_downstream.py"


def test_the_smoke_run_fills_fine_tunes_and_reports_every_method(
    toy_shards: Path, tiny_pretrain_run: Path, tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.syspath_prepend(str(BENCH.parents[1]))
    spec = importlib.util.spec_from_file_location("bench_gapfill_downstream", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = save_tiny_gapfill(tmp_path / "gapfill")
    args = [
        "--smoke",
        "--pretrain",
        str(tiny_pretrain_run),
        "--gapfill",
        str(model),
        "--shards",
        str(toy_shards),
    ]
    report = bench.main([*args, "--work", str(tmp_path / "work"), "--test-split", "val"])
    assert [(r["method"], r["seed"]) for r in report["results"]] == [
        ("drop", 0),
        ("interpolate", 0),
        ("model", 0),
    ]
    for result in report["results"]:
        assert 0 <= result["miou"] <= 1 and 0 < result["oa"] <= 1 and 0 < result["changed_share"] < 1
        filled = tmp_path / "work" / "filled" / result["method"]
        assert read_manifest(filled).split("train").source["fill"]["method"] == result["method"]
        run = tmp_path / "work" / "runs" / f"{result['method']}-seed0"
        stored = yaml.safe_load((run / "config.yaml").read_text())
        assert stored["model"]["modalities"] == ["s2"] and stored["task"]["name"] == "lpis"
    assert report["results"][0]["changed"] == "dates dropped"
    assert report["results"][2]["changed"] == "pixels replaced"
    printed = capsys.readouterr().out
    assert "| method | seed | test mIoU | test OA | S2 changed |" in printed and "| model | 0 |" in printed
    saved = json.loads((tmp_path / "work" / "gapfill_downstream.json").read_text())
    assert saved["results"] == report["results"] and set(saved["fills"]) == {"drop", "interpolate", "model"}
