"""Loader benchmark: shards vs the per-file FlairHubReader, per CPU core, on the toy dataset.

    python bench/loader.py                       # 48-patch toy dataset in a temp dir
    python bench/loader.py --patches 200 --keep /tmp/bench
    python bench/loader.py --encodings           # member-encoding comparison (docs/shards.md)

End to end means decode + MAESTRO preprocessing + collation into batches, in one process
(``num_workers=0``), so samples/s is per core. Both paths read the same patches of the train split
with the default inputs (aerial, dem, s2, s1_asc, s1_des, + the s2 mask) from a warm page cache:
the per-file numbers are an upper bound for a network file system, where each of the six
GeoTIFF opens per sample costs a round trip.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import io
import json
import logging
import lzma
import os
import platform
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from maestro.data.collate import collate_model_samples
from maestro.data.flairhub import FlairHubReader
from maestro.data.layout import SPLIT_NAME, PatchId, raster_relpath
from maestro.data.toy import write_toy_dataset
from maestro.modalities import DEFAULT_INPUTS, get_modality, with_companions
from shards.format import array_member, decode_array, decode_member, encode_array, encode_member
from shards.loader import default_preprocess, make_loader
from shards.manifest import read_manifest
from shards.writer import BuildConfig, build

INPUTS = tuple(with_companions(DEFAULT_INPUTS))
CHOSEN = "**shard format: npy, labels npy.gz**"


def _machine() -> str:
    return f"{platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def _time(fn: Callable[[], int], repeats: int) -> float:
    """Best samples/s over ``repeats`` runs (the first run warms caches and is discarded)."""
    fn()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = fn()
        best = max(best, count / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------------- end-to-end paths


def per_file_epoch(reader: FlairHubReader, mode: str, batch_size: int) -> Callable[[], int]:
    preprocess = default_preprocess(mode, DEFAULT_INPUTS)
    rng = np.random.default_rng(0)

    class Mapped(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(reader)

        def __getitem__(self, index: int):
            return preprocess(reader[index], rng)

    def run() -> int:
        loader = torch.utils.data.DataLoader(
            Mapped(),
            batch_size=batch_size,
            shuffle=mode == "train",
            num_workers=0,
            collate_fn=collate_model_samples,
        )
        return sum(len(batch["meta"]) for batch in loader)

    return run


def shard_epoch(out: Path, mode: str, batch_size: int, num_samples: int) -> Callable[[], int]:
    # Steady state: a training epoch of 4 resampled passes, so the shuffle buffer's fill at each
    # epoch start (16 samples decoded ahead) weighs what it does in a real epoch of thousands of
    # batches, not 40% of a 5-batch toy epoch.
    options = {"batches_per_epoch": max(1, 4 * num_samples // batch_size)} if mode == "train" else {}
    loader = make_loader(
        out,
        preprocess=default_preprocess(mode, DEFAULT_INPUTS),
        mode=mode,
        split="train",
        batch_size=batch_size,
        num_workers=0,
        modalities=INPUTS,
        shuffle_buffer=16,
        shuffle_initial=4,
        **options,
    )

    def run() -> int:
        return sum(len(batch["meta"]) for batch in loader)

    return run


def raw_shard_epoch(out: Path) -> Callable[[], int]:
    loader = make_loader(
        out, preprocess=None, mode="eval", split="train", batch_size=None, num_workers=0, modalities=INPUTS
    )
    return lambda: sum(1 for _ in loader)


def source_bytes(reader: FlairHubReader) -> int:
    """Bytes of the GeoTIFFs the reader opens for the split (the per-file path's input)."""
    total = 0
    for patch_id in reader.patch_ids:
        patch = PatchId.parse(patch_id)
        total += sum((reader.root / raster_relpath(get_modality(k), patch)).stat().st_size for k in INPUTS)
    return total


def end_to_end(args: argparse.Namespace, root: Path, work: Path) -> None:
    out = work / "shards"
    build(
        BuildConfig(
            root=root,
            out=out,
            split="train",
            modalities=INPUTS,
            max_count=args.shard_samples,
            workers=1,
            progress=False,
        )
    )
    entry = read_manifest(out).split("train")
    reader = FlairHubReader(root, list(INPUTS), split="train")
    n = len(reader)
    rows = [
        (
            "decode only (raw samples)",
            _time(lambda: sum(1 for _ in (reader[i] for i in range(n))), args.repeats),
            _time(raw_shard_epoch(out), args.repeats),
        )
    ]
    for mode in ("train", "eval"):
        files = _time(per_file_epoch(reader, mode, args.batch_size), args.repeats)
        shards = _time(shard_epoch(out, mode, args.batch_size, n), args.repeats)
        rows.append((f"{mode}: decode + preprocess + collate", files, shards))
    src = source_bytes(reader) / n
    shard = entry.num_bytes / entry.num_samples
    print(f"\n**Loader benchmark** — {dt.date.today().isoformat()}, `{' '.join(sys.argv)}`  ")
    print(f"machine: {_machine()}; torch {torch.__version__}, {torch.get_num_threads()} torch thread  ")
    print(
        f"data: toy dataset, {n} train patches, inputs {', '.join(INPUTS)}, batch {args.batch_size}, "
        f"shards of {args.shard_samples} samples, one process (num_workers=0), warm page cache\n"
    )
    print("| pipeline | per-file reader (samples/s/core) | shards (samples/s/core) | speed-up |")
    print("|---|---:|---:|---:|")
    for mode, files, shards in rows:
        print(f"| {mode} | {files:.1f} | {shards:.1f} | {shards / files:.1f}x |")
    print("\n| storage | bytes/sample | vs source |")
    print("|---|---:|---:|")
    print(f"| source GeoTIFFs (toy: DEFLATE + predictor) | {src / 1e6:.2f} MB | 1.00x |")
    print(f"| shards (.npy members) | {shard / 1e6:.2f} MB | {shard / src:.2f}x |")


# ------------------------------------------------------------------------- member encodings


def _shuffle_bytes(data: bytes, itemsize: int) -> bytes:
    """Byte-plane shuffle (what blosc / TIFF predictor 3 do): helps floats compress."""
    return np.frombuffer(data, np.uint8).reshape(-1, itemsize).T.tobytes()


def _encoders() -> dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]]:
    def npz(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, a=array)
        return buffer.getvalue()

    def zlib_encoder(level: int) -> Callable[[np.ndarray], bytes]:
        return lambda a: zlib.compress(encode_array(a), level)

    def shuffled_zlib(array: np.ndarray) -> bytes:
        header = json.dumps([array.dtype.str, array.shape]).encode() + b"\n"
        return header + zlib.compress(_shuffle_bytes(array.tobytes(), array.itemsize), 1)

    def unshuffle(data: bytes) -> np.ndarray:
        header, payload = data.split(b"\n", 1)
        dtype, shape = json.loads(header)
        dtype = np.dtype(dtype)
        planes = np.frombuffer(zlib.decompress(payload), np.uint8).reshape(dtype.itemsize, -1).T
        return np.frombuffer(planes.tobytes(), dtype).reshape(shape)

    encoders: dict[str, tuple[Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]] = {
        "npy (raw)": (encode_array, decode_array),
        "npy + zlib level 1": (zlib_encoder(1), lambda b: decode_array(zlib.decompress(b))),
        "npy + zlib level 6": (zlib_encoder(6), lambda b: decode_array(zlib.decompress(b))),
        "npz (savez_compressed)": (npz, lambda b: np.load(io.BytesIO(b), allow_pickle=False)["a"]),
        "npy + lzma preset 0": (
            lambda a: lzma.compress(encode_array(a), preset=0),
            lambda b: decode_array(lzma.decompress(b)),
        ),
        "byte-shuffle + zlib level 1": (shuffled_zlib, unshuffle),
        CHOSEN: (encode_array, decode_array),  # replaced per member by the shard format's own codec
    }
    return encoders


def _tif_roundtrip(path: Path) -> tuple[int, Callable[[], np.ndarray]]:
    from rasterio.io import MemoryFile

    data = path.read_bytes()

    def decode() -> np.ndarray:
        with MemoryFile(data) as memfile, memfile.open() as src:
            return src.read()

    return len(data), decode


def _measure(samples: list[dict], keys: list[str], root: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """codec -> member -> (mean bytes, mean decode seconds) over the samples, round trip checked."""
    results: dict[str, dict[str, tuple[float, float]]] = {}
    codecs = dict(_encoders())
    for name, (encode, decode) in codecs.items():
        per_member = {}
        for key in keys:
            if name == CHOSEN:
                member = array_member(key)
                encode, decode = (
                    functools.partial(encode_member, member),
                    functools.partial(decode_member, member),
                )
            size, seconds = 0, 0.0
            for sample in samples:
                blob = encode(sample[key])
                start = time.perf_counter()
                back = decode(blob)
                seconds += time.perf_counter() - start
                assert np.array_equal(back, sample[key]) and back.dtype == sample[key].dtype, name
                size += len(blob)
            per_member[key] = (size / len(samples), seconds / len(samples))
        results[name] = per_member
    per_member = {}
    for key in keys:
        size, seconds = 0, 0.0
        for sample in samples:
            nbytes, decode_tif = _tif_roundtrip(root / sample["meta"]["rasters"][key]["path"])
            start = time.perf_counter()
            decode_tif()
            seconds += time.perf_counter() - start
            size += nbytes
        per_member[key] = (size / len(samples), seconds / len(samples))
    results["original GeoTIFF bytes (rasterio MemoryFile)"] = per_member
    return results


def encodings(args: argparse.Namespace, root: Path) -> None:
    keys = [*INPUTS, "lc", "lpis"]
    reader = FlairHubReader(root, keys, split="train")
    samples = [reader[i] for i in range(min(len(reader), args.encoding_samples))]
    results = _measure(samples, keys, root)
    raw = results["npy (raw)"]
    rows = results
    print(f"\n**Member encodings** — {dt.date.today().isoformat()}, `{' '.join(sys.argv)}`  ")
    print(f"machine: {_machine()}  ")
    print(
        f"data: {len(samples)} toy train samples (synthetic, smoother than real imagery: compression ratios "
        f"are optimistic), members {', '.join(keys)}; one core\n"
    )
    print("| encoding | MB/sample | vs raw | decode ms/sample | decode samples/s |")
    print("|---|---:|---:|---:|---:|")
    raw_total = sum(v[0] for v in raw.values())
    for name, per_member in rows.items():
        size = sum(v[0] for v in per_member.values())
        seconds = sum(v[1] for v in per_member.values())
        print(
            f"| {name} | {size / 1e6:.2f} | {size / raw_total:.2f} | {seconds * 1e3:.1f} | {1 / seconds:.0f} |"
        )
    print("\nper member, MB (decode ms):\n")
    names = list(results)
    print("| member | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key in keys:
        cells = [f"{results[n][key][0] / 1e6:.3f} ({results[n][key][1] * 1e3:.2f})" for n in names]
        print(f"| {key} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, help="existing FLAIR-HUB-layout dataset (default: write a toy one)"
    )
    parser.add_argument("--patches", type=int, default=48, help="toy dataset size (default 48, ~2/3 train)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temp dir)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-samples", type=int, default=16, help="samples per shard (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs, best is reported (default 3)")
    parser.add_argument("--encodings", action="store_true", help="compare member encodings instead")
    parser.add_argument("--encoding-samples", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # per core, as in a DataLoader worker (torch sets 1 thread there too)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = args.root
        if root is None:
            root = work / "toy"
            if not (root / SPLIT_NAME).exists():
                write_toy_dataset(root, num_patches=args.patches, seed=0)
        if args.encodings:
            encodings(args, root)
        else:
            end_to_end(args, root, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
