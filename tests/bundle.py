"""Readers for what scripts/build-binary makes: the launcher's payload and trailer
(packaging/launcher.c, packaging/make-bundle.py) or a PyInstaller one-file archive."""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

# ---- readers for the two formats ----------------------------------------------------------------


COOKIE_MAGIC = b"MEI\014\013\012\013\016"
COOKIE_FMT = "!8sIIII64s"
TOC_ENTRY_FMT = "!IIIIBc"

# packaging/launcher.c / make-bundle.py
LAUNCHER_MAGIC = b"ECRKUBELET-BNDL2"
LAUNCHER_TRAILER = struct.Struct("<QQ64s64s64s64s16s")
LAUNCHER_RECORD = struct.Struct("<cIIQ")
RECORD = ".ecr-bundle-complete"


@dataclass(frozen=True)
class Entry:
    name: str  # path as the program sees it: relative to sys._MEIPASS (one-dir: _internal/)
    kind: str  # "binary" (shared library / extension / executable), "data", "symlink"
    data: bytes
    path: str = ""  # path inside the unpacked tree (launcher format)
    mode: int = 0o644


class Bundle:
    """What the binary unpacks: the launcher's payload, or the one-file CArchive's entries."""

    def __init__(self, path: Path) -> None:
        self.raw = path.read_bytes()
        self.entries: list[Entry] = []
        self.launcher = self.raw.endswith(LAUNCHER_MAGIC)
        if self.launcher:
            offset, length, bundle_id, entry, loader, libdir, _magic = LAUNCHER_TRAILER.unpack_from(
                self.raw, len(self.raw) - LAUNCHER_TRAILER.size)
            self.payload_offset, self.payload_length = offset, length
            self.id = bundle_id.decode("ascii")
            self.entry = entry.rstrip(b"\0").decode()
            self.loader = loader.rstrip(b"\0").decode()
            self.libdir = libdir.rstrip(b"\0").decode()
            payload = self.raw[offset : offset + length]
            assert hashlib.sha256(payload).hexdigest() == self.id, "bundle id is not the payload's sha256"
            self._read_payload(zlib.decompress(payload))
        else:
            self._read_carchive(path)

    def _read_payload(self, data: bytes) -> None:
        pos = 0
        while True:
            kind, mode, plen, size = LAUNCHER_RECORD.unpack_from(data, pos)
            pos += LAUNCHER_RECORD.size
            if kind == b"E":
                break
            rel = data[pos : pos + plen].decode()
            body = data[pos + plen : pos + plen + size]
            pos += plen + size
            if kind == b"D":
                continue
            name = rel.removeprefix("_internal/")
            if kind == b"L":
                self.entries.append(Entry(name, "symlink", body, rel, mode))
            else:
                self.entries.append(Entry(name, "binary" if body[:4] == b"\x7fELF" else "data", body, rel, mode))
        assert pos == len(data), "trailing bytes after the end record"

    def _read_carchive(self, path: Path) -> None:
        cookie_at = self.raw.rfind(COOKIE_MAGIC)
        if cookie_at < 0:
            raise ValueError(f"{path} holds neither a launcher bundle nor a PyInstaller archive")
        _magic, pkg_len, toc_off, toc_len, _pyver, _pylib = struct.unpack_from(COOKIE_FMT, self.raw, cookie_at)
        start = cookie_at + struct.calcsize(COOKIE_FMT) - pkg_len
        pos, end = start + toc_off, start + toc_off + toc_len
        head = struct.calcsize(TOC_ENTRY_FMT)
        while pos < end:
            entry_len, off, length, _ulen, flag, typecode = struct.unpack_from(TOC_ENTRY_FMT, self.raw, pos)
            name = self.raw[pos + head : pos + entry_len].rstrip(b"\0").decode()
            pos += entry_len
            code = typecode.decode()
            if code not in ("b", "e", "x"):  # only these are written to the temp dir
                continue
            raw = self.raw[start + off : start + off + length]
            self.entries.append(Entry(name, "binary" if code in ("b", "e") else "data",
                                      zlib.decompress(raw) if flag else raw))

    def outer(self) -> bytes:
        """The executable the kernel runs: the launcher (without its payload) or the bootloader."""
        return self.raw[: self.payload_offset] if self.launcher else self.raw

    def write_tree(self, dest: Path) -> Path:
        """The payload's files under dest, as the launcher would unpack them."""
        for entry in self.entries:
            target = dest / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == "symlink":
                target.symlink_to(entry.data.decode())
            else:
                target.write_bytes(entry.data)
                target.chmod(entry.mode & 0o755)
        return dest
