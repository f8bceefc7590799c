"""The benchmarks stand on the library and the apps alone (none imports the test suite), and their
command lines do what they say: batch sizes, precisions, failures reported with their errors."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_a_bench_does_not_import_the_test_suite(path: Path) -> None:
    test_modules = {Path(p).stem for p in BENCH.parent.joinpath("tests").glob("*.py")}
    wrong = {m for m in imported_modules(path) if m.split(".")[0] in {"tests", *test_modules}}
    assert not wrong, f"{path.name} imports {sorted(wrong)}"


# ------------------------------------------------------------------------------ bench arguments


def load_bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A bench script as a module, imported as when run with ``PYTHONPATH=.`` from the repo root."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_pretrain_throughput_batch_sizes_apply_to_compile_full(monkeypatch):
    bench = load_bench("pretrain_throughput", monkeypatch)
    default = bench.parse_args([])
    assert default.batch_sizes == [32, 64, 128, 256] and default.mode_batches == ["compile-full=256"]
    # A batch size given on the command line holds for every mode (an 80 GB card cannot take 256).
    assert bench.parse_args(["--batch-sizes", "128"]).mode_batches == []
    assert bench.parse_args(["--size-batches", "medium=64"]).mode_batches == []
    chosen = bench.parse_args(["--batch-sizes", "128", "--mode-batches", "compile-full=96"])
    assert chosen.mode_batches == ["compile-full=96"]
    assert bench.parse_args(["--precision", "bf16", "fp8"]).precision == ["bf16", "fp8"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--precision", "fp4"])


def _fake_memory(bench: ModuleType, monkeypatch: pytest.MonkeyPatch, fits_up_to: int) -> None:
    """Training steps that run out of memory above ``fits_up_to`` samples, as on a smaller card."""
    error = "CUDA out of memory. Tried to allocate 12.00 GiB"

    def run_config(fn, optimizer, config, batch_size, *rest):
        if batch_size > fits_up_to:
            return {"batch": batch_size, **bench.failure(torch.OutOfMemoryError(error))}
        return {"batch": batch_size, "status": "ok", "samples_per_s": 10.0 * batch_size}

    monkeypatch.setattr(bench, "run_config", run_config)
    monkeypatch.setattr(
        bench, "fits", lambda fn, opt, config, batch_size, *rest: (batch_size <= fits_up_to, 1.0)
    )


@pytest.mark.parametrize("fallback", [True, False])
def test_a_batch_that_does_not_fit_is_reported_and_searched_down(monkeypatch, fallback):
    bench = load_bench("pretrain_throughput", monkeypatch)
    _fake_memory(bench, monkeypatch, fits_up_to=96)
    args = bench.parse_args(["--batch-sizes", "256", "512"] + ([] if fallback else ["--no-fallback"]))
    results = bench.Results(None, {})
    labels = {"size": "medium", "precision": "fp8", "mode": "compile-full"}
    largest = bench.time_batches(
        None, None, None, args.batch_sizes, None, None, 1.0, args, bench.Deadline(None), labels, results
    )
    runs = results.data["runs"]
    assert runs[0]["batch"] == 256 and runs[0]["status"] == "oom"
    assert runs[0]["error"] == "CUDA out of memory. Tried to allocate 12.00 GiB"
    assert results.data["skipped"] == ["medium/fp8/compile-full/b512 (batch 256 did not fit)"]
    if fallback:  # halving: 128 does not fit, 64 does; timed in place of 256
        assert largest == 64
        assert runs[1] == {
            "batch": 64,
            "status": "ok",
            "samples_per_s": 640.0,
            **labels,
            "requested_batch": 256,
        }
    else:
        assert largest is None and len(runs) == 1


def test_pretrain_throughput_times_bf16_and_fp8(monkeypatch, tmp_path):
    """The smoke matrix on CPU in both precisions (torchao runs its FP8 layers on CPU here)."""
    bench = load_bench("pretrain_throughput", monkeypatch)
    out = tmp_path / "results.json"
    args = ["--smoke", "--no-loader", "--no-search", "--batch-sizes", "2", "--json", str(out)]
    assert bench.main([*args, "--precision", "bf16", "fp8", "--fp8-min-features", "64"]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [(r["precision"], r["batch"], r["status"]) for r in runs] == [("bf16", 2, "ok"), ("fp8", 2, "ok")]
    # The default threshold converts nothing of the tiny model: reported, not run as if in FP8.
    assert bench.main([*args, "--precision", "fp8"]) == 0
    results = json.loads(out.read_text())
    assert results["runs"] == [] and "tiny/fp8: trainer.precision=fp8 converts" in results["skipped"][0]


def test_finetune_throughput_reports_a_failed_precision_with_its_error(monkeypatch, tmp_path):
    """FP8 at the default threshold converts nothing of the tiny encoder: a result with the reason."""
    bench = load_bench("finetune_throughput", monkeypatch)
    out = tmp_path / "results.json"
    assert bench.main(["--smoke", "--heads", "linear", "--precision", "fp8", "--json", str(out)]) == 0
    [run] = json.loads(out.read_text())["runs"]
    assert (run["precision"], run["mode"], run["status"]) == ("fp8", "eager", "error: ConfigError")
    assert "at least 512 features; this model (MaestroSegmenter) has none" in run["error"]


def test_scaling_reports_a_synthetic_step_that_did_not_run(monkeypatch, tmp_path):
    """No StopIteration traceback: the phase's result names each batch that failed and why."""
    bench = load_bench("pretrain_scaling", monkeypatch)
    failed = {"runs": [{"batch": 256, "status": "oom", "error": "CUDA out of memory"}], "flops": {}}

    def fake_run(command, log_file, env=None):
        Path(command[command.index("--json") + 1]).write_text(json.dumps(failed))

    monkeypatch.setattr(bench, "_run", fake_run)
    out = tmp_path / "scaling.json"
    assert bench.main(["--phases", "synthetic", "--work", str(tmp_path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())["synthetic"]
    assert result["error"].startswith("synthetic step: no batch ran (batch 256: oom CUDA out of memory)")
    fitted = {
        "runs": [{"batch": 128, "requested_batch": 256, "status": "ok", "samples_per_s": 500.0, "mfu": 0.4}]
    }
    result = bench.synthetic_result({**fitted, "flops": {"medium": {"total": 2e9}}}, "medium", out)
    assert (result["batch"], result["requested_batch"], result["samples_per_s"]) == (128, 256, 500.0)


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        (
            "import os, sys; print('compiling GroupNorm', file=sys.stderr); os.abort()",
            "crashed (signal SIGABRT)",
        ),
        ("import sys; sys.exit(3)", "crashed (exit 3)"),
    ],
)
def test_compare_reports_a_measurement_whose_process_died(monkeypatch, tmp_path, child, expected):
    """A compile that aborts the process (a C++ error) is one reported row, not the end of the bench."""
    bench = load_bench("compare", monkeypatch)
    record = {"model": "swin-utae", "config": "LPIS-I", "batch": 32, "mode": "compile"}
    [run] = bench.run_child([sys.executable, "-c", child], tmp_path / "run.json", record)
    assert run == {**record, "status": expected, "error": run["error"]}
    if "abort" in child:
        assert run["error"].endswith("compiling GroupNorm")


def test_compare_reports_a_measurement_that_outlived_its_timeout(monkeypatch, tmp_path):
    """A compile that runs past ``--child-timeout`` is killed and reported with what it printed."""
    bench = load_bench("compare", monkeypatch)
    record = {"model": "swin-utae", "config": "LPIS-I", "batch": 32, "mode": "compile"}
    child = "import sys, time; print('still compiling', file=sys.stderr, flush=True); time.sleep(60)"
    [run] = bench.run_child([sys.executable, "-c", child], tmp_path / "run.json", record, timeout=2)
    assert run == {**record, "status": "timed out after 2 s", "error": "still compiling"}


def test_compare_reads_the_runs_of_a_measurement_that_finished(monkeypatch, tmp_path):
    bench = load_bench("compare", monkeypatch)
    result = tmp_path / "run.json"
    runs = [{"model": "maestro", "status": "ok", "samples_per_s": 372.5}]
    child = (
        f"import json, pathlib; pathlib.Path({str(result)!r}).write_text(json.dumps({{'runs': {runs!r}}}))"
    )
    assert bench.run_child([sys.executable, "-c", child], result, {"model": "maestro"}) == runs


def test_compare_isolates_each_throughput_measurement(monkeypatch, tmp_path):
    """Each (configuration, model, mode, batch) runs as this script in a child process, whose
    arguments name that one measurement and keep it in its process."""
    bench = load_bench("compare", monkeypatch)
    commands = []

    def fake_child(command, result, record, env, timeout):
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(BENCH.parent.resolve())
        assert timeout == 240
        commands.append(command)
        return [
            {
                **record,
                "status": "ok",
                "samples_per_s": 1.0,
                "step_ms": 1.0,
                "params_m": 1.0,
                "first_step_s": 1.0,
            }
        ]

    monkeypatch.setattr(bench, "run_child", fake_child)
    out = tmp_path / "compare.json"
    argv = ["--throughput", "--configs", "LPIS-I", "--models", "maestro", "swin-utae", "--modes", "compile"]
    assert bench.main([*argv, "--batch-sizes", "32", "--child-timeout", "240", "--json", str(out)]) == 0
    assert [c[c.index("--models") + 1] for c in commands] == ["maestro", "swin-utae"]
    assert all("--no-isolate" in c and c[c.index("--batch-sizes") + 1] == "32" for c in commands)
    assert len(json.loads(out.read_text())["runs"]) == 2


def test_fp8_numerics_table_averages_each_range_over_the_steps_both_runs_logged(monkeypatch):
    bench = load_bench("fp8_numerics_plot", monkeypatch)
    # 0-based steps as the CSV logs them; step 9 only in bf16, so it is left out of every mean
    losses = {"bf16": {0: 1.0, 4: 0.8, 9: 0.1, 14: 0.5}, "fp8": {0: 1.0, 4: 0.9, 14: 0.5}}
    rows = bench.range_rows(losses, [(1, 5), (6, 15), (100, 200)])
    assert rows[2:] == [
        "| 1-5 | 0.9000 | 0.9500 | +5.56 % |",
        "| 6-15 | 0.5000 | 0.5000 | +0.00 % |",
        "| last fifth (15-15) | 0.5000 | 0.5000 | +0.00 % |",
    ]
    with pytest.raises(Exception, match="FIRST-LAST"):
        bench.parse_range("500")


def test_fp8_shapes_times_every_block_and_linear_shape_of_one_step(monkeypatch, tmp_path, capsys):
    """The tiny MAE's block and linear shapes, each in bf16 and both float8 recipes (torchao runs
    FP8 layers on CPU here); the counts add up to the layers one forward runs."""
    bench = load_bench("fp8_shapes", monkeypatch)
    out = tmp_path / "shapes.json"
    assert bench.main(["--smoke", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    blocks = [r for r in rows if r["kind"] == "block"]
    linears = [r for r in rows if r["kind"] == "linear"]
    assert blocks and linears
    assert sum(r["count"] for r in linears) == 4 * sum(r["count"] for r in blocks)  # qkv, proj, fc1, fc2
    for row in rows:
        assert all(row[p]["ms"] > 0 for p in ("bf16", "tensorwise", "rowwise")), row
    printed = capsys.readouterr().out
    assert "| **per step (ms)** |" in printed and "fastest |" in printed


def test_upernet_resize_times_smp_and_matmul_decoders_with_the_same_weights(monkeypatch, tmp_path, capsys):
    bench = load_bench("upernet_resize", monkeypatch)
    smp, ours = bench.decoders(8, 16).values()
    for (name, mine), theirs in zip(ours.state_dict().items(), smp.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name
    out = tmp_path / "upernet.json"
    assert bench.main(["--smoke", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["decoder"], r["mode"]) for r in rows] == [("smp", "eager"), ("matmul", "eager")]
    assert all(r["ms"] > 0 for r in rows)
    assert "| matmul | eager |" in capsys.readouterr().out


def test_compare_passes_the_host_padding_flag_as_finetune_does(monkeypatch):
    """The throughput step hands each network ``padded`` (known on the host), so a compiled MAESTRO
    is not timed with a device read and a graph break that fine-tuning does not have."""
    bench = load_bench("compare", monkeypatch)
    encoder = tiny_config().encoder
    model = MaestroSegmenter(
        SegmenterConfig(encoder=encoder, num_classes=3, label_size=512, decoder_channels=8)
    )
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("padded")), with_kwargs=True
    )
    monkeypatch.setattr(bench, "network", lambda name, key, device: (model, encoder, 3))
    args = bench.argparse.Namespace(warmup=1, steps=1)
    record = bench.measure("maestro", "LPIS-I", 2, "eager", args, torch.device("cpu"))
    assert record["status"] == "ok", record
    assert seen and all(flag is False for flag in seen)
