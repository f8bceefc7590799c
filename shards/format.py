"""The shard sample format: how one raw sample becomes tar members and back.

One webdataset sample per patch, keyed by ``patch_id``::

    {patch_id}.meta.json         {"format_version", "members": [...], "dates": {...}, "meta": {...}}
    {patch_id}.{image}.npy       one array per image / mask modality, on-disk dtype and band order
    {patch_id}.{label}.npy.gz    label rasters, gzip-compressed .npy

The encoding was chosen by measurement (``docs/shards.md``, ``bench/loader.py --encodings``):
images stay raw ``.npy`` because every general-purpose codec (zlib, npz, lzma, or re-decoding the
original GeoTIFF bytes) decodes them more than ten times slower, which alone would cap a loader
core below the throughput target; label maps are piecewise constant, shrink ~50x under gzip and
decode in well under a millisecond, so they are compressed. ``.gz`` is webdataset's own
convention, so ``wds.decode()`` reads these members too. Dates travel in the JSON member as
``YYYYMMDD`` ints (exact), raster georeferencing (CRS, transform) in ``meta`` so that
predictions can be written back as GeoTIFFs.

The JSON member lists the members it was written with, so a sample missing one is detected
even without the manifest. Member names are only ever dictionary keys here, never paths.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from maestro.errors import DataError
from maestro.modalities import MODALITIES, get_modality
from maestro.sample import DATES, META, Sample, modality_keys

FORMAT_NAME = "maestro-shards"
FORMAT_VERSION = 1
ENCODING = "npy; labels npy.gz"
META_MEMBER = "meta.json"
ARRAY_SUFFIX = ".npy"
GZIP_SUFFIX = ".npy.gz"
GZIP_LEVEL = 6
GZIP_KINDS = frozenset({"label"})
"""Registry kinds whose rasters are stored gzip-compressed (see the module docstring)."""

KEY_MAX_LEN = 64
"""Keeps ``{key}.{modality}.npy`` within the 100-character USTAR name field."""
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def validate_key(key: str) -> str:
    """A sample key must be a plain token: webdataset splits member names at the first dot and
    at slashes, and a key with ``..`` or ``/`` would look like a path to tar tools."""
    if not isinstance(key, str) or len(key) > KEY_MAX_LEN or not _SAFE_KEY.match(key):
        raise DataError(
            f"patch_id {key!r} cannot be a shard sample key: expected 1-{KEY_MAX_LEN} characters "
            "from [A-Za-z0-9_-], starting with a letter or digit",
            patch_id=str(key),
        )
    return key


def array_member(modality: str) -> str:
    """Member suffix of a modality's raster: ``s2.npy``, ``lc.npy.gz``."""
    return f"{modality}{GZIP_SUFFIX if get_modality(modality).kind in GZIP_KINDS else ARRAY_SUFFIX}"


def member_modality(member: str) -> str:
    return member.split(".", 1)[0]


def _jsonable(value: Any, where: str) -> Any:
    """Convert reader metadata (tuples, numpy scalars, CRS objects, paths) to plain JSON types.

    Anything else is an error rather than ``str(value)``: a silently stringified transform would
    decode as garbage later.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    to_string = getattr(value, "to_string", None)
    if callable(to_string):
        return to_string()
    raise TypeError(f"cannot store {where} of type {type(value).__name__} in the shard JSON member")


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


_NPY_MAGIC = b"\x93NUMPY"
_NPY_LENGTH = {1: ("<H", 10), 2: ("<I", 12)}
"""Header-length field format and header start, per ``.npy`` major version."""


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of a ``.npy`` header. Cached on its bytes: a shard holds a few
    distinct headers, and numpy parses each with ``ast.literal_eval`` (~0.3 ms per sample)."""
    stream = io.BytesIO(header)
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(stream)


def decode_array(data: bytes | bytearray) -> np.ndarray:
    """``.npy`` bytes -> writable array; object (pickled) arrays are refused.

    A writable buffer (the local shard reader's copy-on-write view of the mapped shard, a
    ``bytearray``) is wrapped without copying; immutable ``bytes`` are copied once so that callers
    always get a writable array, like the reader's.
    """
    view = memoryview(data)
    try:
        if bytes(view[:6]) != _NPY_MAGIC or view[6] not in _NPY_LENGTH or view[7] != 0:
            # 3.0 (utf-8 field names) is never written for our dtypes; numpy says what is wrong
            return np.lib.format.read_array(io.BytesIO(bytes(data)), allow_pickle=False)
        layout, start = _NPY_LENGTH[view[6]]
        (length,) = struct.unpack_from(layout, view, 8)
        if len(data) < start + length:
            raise ValueError("truncated header")
        shape, fortran, dtype = _npy_header(bytes(view[: start + length]))
    except (ValueError, EOFError, SyntaxError, IndexError, struct.error) as exc:
        raise ValueError(f"not a .npy array ({exc})") from None
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed in shards")
    count = int(np.prod(shape, dtype=np.int64))
    offset = start + length
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f"{len(data) - offset} data bytes for shape {shape} of {dtype}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran else "C")
    return array if array.flags.writeable else array.copy()


def encode_member(member: str, array: np.ndarray) -> bytes:
    data = encode_array(array)
    # mtime=0: identical input gives identical bytes, so rebuilt shards keep their checksums
    return gzip.compress(data, GZIP_LEVEL, mtime=0) if member.endswith(".gz") else data


def decode_member(member: str, data: bytes) -> np.ndarray:
    return decode_array(gzip.decompress(data) if member.endswith(".gz") else data)


def encode_sample(sample: Sample, modalities: Iterable[str]) -> dict[str, Any]:
    """Raw sample -> webdataset sample dict (``__key__`` plus member bytes), ready for TarWriter.

    Every modality in ``modalities`` must be in the sample: a shard never silently lacks one.
    """
    meta = dict(sample.get(META) or {})
    key = validate_key(str(meta.get("patch_id", "")))
    modalities = list(modalities)
    present = set(modality_keys(sample))
    missing = [m for m in modalities if m not in present]
    if missing:
        raise DataError(f"raw sample lacks modalities {missing} requested for the shards", patch_id=key)
    dates = {k: [int(d) for d in np.asarray(v).reshape(-1)] for k, v in (sample.get(DATES) or {}).items()}
    header = {
        "format_version": FORMAT_VERSION,
        "members": [array_member(m) for m in modalities],
        "dates": dates,
        "meta": _jsonable(meta, "meta"),
    }
    out: dict[str, Any] = {"__key__": key, META_MEMBER: json.dumps(header, sort_keys=True).encode("utf-8")}
    for modality in modalities:
        member = array_member(modality)
        out[member] = encode_member(member, np.asarray(sample[modality]))
    return out


def _check_array(array: np.ndarray, modality: str, dates: Mapping[str, np.ndarray], where: str) -> None:
    """Cheap structural checks against the registry, so corruption fails loudly at decode."""
    entry = get_modality(modality)
    expected_ndim = 4 if entry.temporal else 3
    if array.dtype != np.dtype(entry.dtype):
        raise DataError(f"{where}: {modality} has dtype {array.dtype}, registry says {entry.dtype}")
    if array.ndim != expected_ndim or array.shape[-3] != entry.num_bands:
        raise DataError(
            f"{where}: {modality} has shape {array.shape}, expected "
            f"{'(T, ' if entry.temporal else '('}{entry.num_bands}, H, W)"
        )
    if entry.temporal and modality in dates and len(dates[modality]) != array.shape[0]:
        raise DataError(
            f"{where}: {modality} has {array.shape[0]} dates but the JSON lists {len(dates[modality])}"
        )


def decode_sample(
    members: Mapping[str, Any], *, modalities: Iterable[str] | None = None, where: str = ""
) -> Sample:
    """webdataset sample (``__key__``, member bytes) -> raw sample dict (``maestro.sample``).

    ``modalities`` selects what to decode (default: every member the sample declares, so readers
    may skip extracting the others); a wanted member that is absent raises :class:`DataError`
    naming ``where`` (shard and key).
    """
    key = members.get("__key__", "?")
    where = where or f"sample {key}"
    raw_header = members.get(META_MEMBER)
    if raw_header is None:
        raise DataError(f"{where}: missing member {key}.{META_MEMBER}")
    try:
        header = json.loads(raw_header)
        version = header["format_version"]
        declared = [str(m) for m in header["members"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: unreadable {META_MEMBER} ({exc})") from None
    if version != FORMAT_VERSION:
        raise DataError(f"{where}: shard format version {version}, this code reads {FORMAT_VERSION}")
    for member in declared:
        modality = member_modality(member)
        if modality not in MODALITIES or member != array_member(modality):
            raise DataError(f"{where}: {META_MEMBER} declares unknown member {member!r}")
    wanted = [array_member(m) for m in modalities] if modalities is not None else declared
    absent = [m for m in wanted if m not in members]
    if absent:
        raise DataError(f"{where}: missing members {absent}; {META_MEMBER} declares {declared}")
    dates = {k: np.asarray(v, dtype=np.int32) for k, v in header.get("dates", {}).items()}
    sample: Sample = {}
    for member in wanted:
        modality = member_modality(member)
        try:
            array = decode_member(member, members[member])
        except (ValueError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{where}: member {member} does not decode ({exc})") from None
        _check_array(array, modality, dates, where)
        sample[modality] = array
    sample[DATES] = dates
    sample[META] = header.get("meta", {})
    return sample
