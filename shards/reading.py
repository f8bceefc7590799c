"""Reading shards: URL resolution and one shard -> its samples, with errors that name the shard.

Built from webdataset's own pieces (``gopen`` for local paths, ``pipe:`` commands and object-store
URLs; ``tar_file_iterator`` and ``group_by_keys`` for the tar stream) but wrapped per shard, so a
truncated or corrupt tar raises a :class:`DataError` naming the shard and the last good sample
instead of a bare ``ReadError`` about an anonymous stream. Used by the loader, ``verify`` and
``stats``.
"""

from __future__ import annotations

import logging
import mmap
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import webdataset as wds
from webdataset.shardlists import expand_urls
from webdataset.tariterators import group_by_keys, tar_file_iterator

from maestro.errors import DataError
from shards.format import ARRAY_SUFFIX, META_MEMBER, array_member
from shards.manifest import MANIFEST_NAME, manifest_path, read_manifest
from shards.tarscan import Scan, scan_ustar

log = logging.getLogger(__name__)

_STREAM_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError)


@dataclass(frozen=True)
class ShardSource:
    """Shard URLs to read, plus what the manifest says about them when there is one."""

    urls: list[str]
    expected_counts: dict[str, int] | None = None
    """Samples per shard URL: lets the reader notice a shard that ends early."""
    modalities: list[str] | None = None
    num_samples: int | None = None

    @property
    def members(self) -> list[str] | None:
        return None if self.modalities is None else [array_member(m) for m in self.modalities]


def _is_local(url: str) -> bool:
    return url.startswith("file:") or ("://" not in url and not url.startswith("pipe:"))


def resolve_source(source: str | Path | Sequence[str | Path], split: str | None = None) -> ShardSource:
    """Shard URLs from a manifest (file or directory), a brace pattern, a URL or a list of those.

    ``train-{000000..000127}.tar`` expands with webdataset's brace expansion; ``pipe:`` and
    object-store URLs are passed through to ``gopen``; a directory or ``manifest.json`` resolves
    to the split's shards next to the manifest (``split`` may be omitted if there is only one).
    """
    file = local_manifest(source) if isinstance(source, str | Path) else None
    if file is not None:
        entry = read_manifest(file).split(split)
        urls = [str(file.parent / shard.name) for shard in entry.shards]
        return ShardSource(
            urls=urls,
            expected_counts={u: s.count for u, s in zip(urls, entry.shards, strict=True)},
            modalities=list(entry.modalities),
            num_samples=entry.num_samples,
        )
    items = [source] if isinstance(source, str | Path) else list(source)
    urls: list[str] = []
    for item in items:
        urls.extend(expand_urls(str(item)))
    if not urls:
        raise DataError(f"no shard URLs in {source!r}")
    missing = [url for url in urls if _is_local(url) and not Path(_local_path(url)).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"no shard file at {shown} (a shard directory needs its manifest.json)")
    return ShardSource(urls=urls)


def local_manifest(source: str | Path) -> Path | None:
    """The manifest file of a local shard directory or manifest path; None for patterns and URLs."""
    if not _is_local(str(source)):
        return None
    path = Path(source)
    if path.is_dir() or path.name == MANIFEST_NAME or (path.suffix == ".json" and path.is_file()):
        return manifest_path(path)
    return None


def _local_path(url: str) -> str:
    return url.removeprefix("file://") if url.startswith("file://") else url.removeprefix("file:")


def _local_tar_files(stream: Any, select: Callable[[str], bool] | None) -> Iterator[dict[str, Any]]:
    """Members of a seekable tar, as ``tar_file_iterator`` yields them.

    The shard is mapped into memory and each ``.npy`` member handed out as a view of the mapping (no
    read, no copy; copy-on-write, so arrays decoded from it are writable), others as bytes; headers are read by
    :func:`shards.tarscan.scan_ustar`, with ``tarfile`` taking over at any header it leaves.
    Shards are replaced by rename, never rewritten in place, so a mapping stays valid. webdataset's
    streaming mode copies everything through 10 KB chunks, which measured ~3x slower per sample on
    local shards; streams (``pipe:``, object stores) still use it.
    """
    size = os.fstat(stream.fileno()).st_size
    if not size:
        raise tarfile.ReadError("empty file")
    data = memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_COPY))
    scan = Scan()
    for name, start, length in scan_ustar(data, scan, select):
        yield {"fname": name, "data": _member(data, name, start, length)}
    if scan.offset is None:
        return
    stream.seek(scan.offset)
    with tarfile.open(fileobj=stream, mode="r:") as tar:
        while (info := tar.next()) is not None:
            tar.members.clear()  # do not keep every header of a large shard in memory
            if not info.isreg() or (select is not None and not select(info.name)):
                continue
            if info.issparse():  # never written by our writer
                member = tar.extractfile(info)
                yield {"fname": info.name, "data": member.read() if member is not None else b""}
            elif info.offset_data + info.size > size:
                raise tarfile.ReadError("unexpected end of data")
            else:
                yield {"fname": info.name, "data": _member(data, info.name, info.offset_data, info.size)}


def _member(data: memoryview, name: str, start: int, length: int) -> bytes | memoryview:
    """A raw array member as a view of the mapping; any other (JSON, gzip) as bytes, which every
    parser takes."""
    view = data[start : start + length]
    return view if name.endswith(ARRAY_SUFFIX) else bytes(view)


def _tagged(files: Iterable[dict[str, Any]], url: str) -> Iterator[dict[str, Any]]:
    for file in files:
        file["__url__"] = url
        yield file


def iter_shard(url: str, *, members: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """webdataset samples (``__key__``, ``__url__``, member bytes) of one shard, in tar order.

    ``members`` limits which member suffixes are extracted (``meta.json`` always is), which
    saves copying rasters a consumer does not need. Raises :class:`DataError` naming the shard on
    a truncated or corrupt tar, and naming the command on a failing ``pipe:``.
    """
    select = None
    if members is not None:
        wanted = {META_MEMBER, *members}

        def select(fname: str) -> bool:
            return fname.split(".", 1)[-1].lower() in wanted

    try:
        # closed in the finally below, which must also run when the consumer abandons the generator
        stream = open(_local_path(url), "rb") if _is_local(url) else wds.gopen(url, "rb")  # noqa: SIM115
    except _STREAM_ERRORS as exc:
        raise DataError(f"cannot open shard ({exc})", path=url) from exc
    last_key = None
    failed = False
    try:
        if _is_local(url):
            files = _local_tar_files(stream, select)
        else:
            files = tar_file_iterator(stream, select_files=select)
        for sample in group_by_keys(_tagged(files, url)):
            last_key = sample["__key__"]
            yield sample
    except _STREAM_ERRORS as exc:
        failed = True
        where = f"after sample {last_key}" if last_key is not None else "before its first sample"
        message = str(exc.args[0]).split(" @ ")[0] if exc.args else type(exc).__name__
        raise DataError(f"truncated or corrupt shard: {message} ({where})", path=url) from exc
    except GeneratorExit:
        failed = True  # the consumer stopped early (epoch end): a pipe's SIGPIPE is expected
        raise
    finally:
        try:
            stream.close()
        except _STREAM_ERRORS as exc:
            if not failed:
                raise DataError(f"shard stream failed on close ({exc})", path=url) from exc
            log.debug("ignoring close error of %s after an earlier failure: %s", url, exc)
