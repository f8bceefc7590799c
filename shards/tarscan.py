"""Member headers of a memory-mapped shard, read without ``tarfile``'s per-header cost.

A shard sample is ~10 tar members, and ``tarfile.TarFile.next`` parses each 512-byte header field
by field in Python (~50 us each, ~0.5 ms per sample on the development VM). The shards' writer
emits plain POSIX ``ustar`` headers for regular files, whose name and size sit at fixed offsets;
:func:`scan_ustar` reads those and stops at the first header it does not handle (PAX or GNU
extensions, links, base-256 sizes), returning where, so that the caller hands the rest of the
archive to ``tarfile``. End-of-archive and corruption follow ``tarfile``'s own rules: a bad first
header raises, a zero, short or bad-checksum header later ends the archive.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

BLOCK = 512
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\0")


@dataclass
class Scan:
    """Where :func:`scan_ustar` stopped: ``offset`` of a header left to ``tarfile``, or None at
    the end of the archive."""

    offset: int | None = None


def _octal(field: bytes) -> int:
    """tarfile's ``nti`` for octal fields: up to the first NUL, blanks stripped, empty = 0."""
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _checksum_ok(block: bytes) -> bool:
    """tarfile's rule: the stored checksum matches the unsigned or the signed byte sum."""
    try:
        stored = _octal(block[148:156])
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)  # bytes as int8
    return stored == signed


def scan_ustar(
    data: memoryview | bytes, scan: Scan, select: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of the regular-file members of a tar held in ``data``.

    Raises ``tarfile.ReadError`` like ``tarfile`` does (empty file, bad first header, member data
    past the end); sets ``scan.offset`` to the first header it leaves to ``tarfile``.
    """
    size = len(data)
    offset = 0
    while True:
        block = bytes(data[offset : offset + BLOCK])
        if block == _ZERO:
            return
        if len(block) < BLOCK or not _checksum_ok(block):
            if offset == 0:
                reason = "truncated header" if block else "empty file"
                raise tarfile.ReadError(reason if len(block) < BLOCK else "bad checksum")
            return
        try:
            length = _octal(block[124:136])
        except ValueError:
            length = -1
        if block[156:157] not in _REGULAR or block[257:262] != b"ustar" or length < 0:
            scan.offset = offset
            return
        name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix.decode("utf-8", "surrogateescape") + "/" + name
        start = offset + BLOCK
        if start + length > size:
            raise tarfile.ReadError("unexpected end of data")
        if not name.endswith("/") and (select is None or select(name)):
            yield name, start, length
        offset = start + -(-length // BLOCK) * BLOCK
