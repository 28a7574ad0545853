#!/usr/bin/env python3
"""Pack a PyInstaller one-dir tree behind the launcher: the unpack-once ``ecr-credential-provider``.

Usage: make-bundle.py LAUNCHER ONEDIR_TREE OUTPUT [--entry NAME] [--level N]

First the tree is made self-contained (packaging/carry_libc.py): the dynamic loader named by the
entry executable's PT_INTERP, and every shared library that some ELF file in the tree needs but the
tree lacks (glibc itself, which PyInstaller deliberately leaves out), are copied from the build
machine into the tree's library directory, and the result is checked: every DT_NEEDED is in the
tree, and no file needs a glibc symbol version the carried libc does not define. The launcher runs
the entry through that loader, so nothing but the kernel is taken from the node.

Then it writes OUTPUT = LAUNCHER bytes + payload + trailer (see packaging/launcher.c for the format):

* payload: ONE zlib stream of records, each ``u8 type, u32 mode, u32 path length, u64 size``
  (little-endian) then the UTF-8 path (relative, ``/``-separated) and ``size`` bytes of data:
  ``D`` directory, ``F`` regular file (its content), ``L`` symlink (its target), and a final
  ``E`` record. Directories come before their contents; entries are sorted, so the payload (and
  the bundle id) only depends on the tree's content and modes.
* trailer: u64 payload offset, u64 payload length, the hex sha256 of the payload (the bundle id:
  the runtime directory name), three relative paths NUL-padded to 64 bytes (the entry executable,
  the carried dynamic loader, the library directory), and the magic ``ECRKUBELET-BNDL2``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

from carry_libc import carry_libc

MAGIC = b"ECRKUBELET-BNDL2"
NAME_LEN = 64
HEADER = struct.Struct("<cIIQ")
TRAILER = struct.Struct(f"<QQ64s{NAME_LEN}s{NAME_LEN}s{NAME_LEN}s16s")


def walk(root: Path) -> Iterator[tuple[bytes, str, int, bytes]]:
    """(type, relative path, mode, data) for every entry under root, parents first, sorted."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        names = sorted([*filenames, *(d for d in dirnames if (here / d).is_symlink())])
        for name in sorted(dirnames):
            path = here / name
            if path.is_symlink():
                continue
            yield b"D", path.relative_to(root).as_posix(), stat.S_IMODE(path.lstat().st_mode), b""
        for name in names:
            path = here / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                if os.path.isabs(target):
                    raise SystemExit(f"make-bundle: {rel}: absolute symlink target {target!r}")
                yield b"L", rel, 0o777, os.fsencode(target)
            elif stat.S_ISREG(st.st_mode):
                yield b"F", rel, stat.S_IMODE(st.st_mode), path.read_bytes()
            else:
                raise SystemExit(f"make-bundle: {rel}: not a regular file, directory or symlink")


def check_rel(rel: str) -> None:
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise SystemExit(f"make-bundle: unsafe path {rel!r}")


def payload(root: Path, level: int) -> tuple[bytes, int, int]:
    """The compressed payload, the number of records and the uncompressed size."""
    comp = zlib.compressobj(level)
    chunks: list[bytes] = []
    count = raw = 0
    for kind, rel, mode, data in walk(root):
        check_rel(rel)
        path = rel.encode("utf-8")
        record = HEADER.pack(kind, mode, len(path), len(data)) + path
        chunks.append(comp.compress(record))
        chunks.append(comp.compress(data))
        count += 1
        raw += len(record) + len(data)
    chunks.append(comp.compress(HEADER.pack(b"E", 0, 0, 0)))
    chunks.append(comp.flush())
    return b"".join(chunks), count, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("launcher", type=Path, help="the compiled packaging/launcher.c")
    parser.add_argument("tree", type=Path, help="PyInstaller one-dir output directory")
    parser.add_argument("output", type=Path, help="the executable to write")
    parser.add_argument("--entry", default="ecr-credential-provider",
                        help="the executable inside the tree (default: ecr-credential-provider)")
    parser.add_argument("--libdir", default="_internal",
                        help="the tree's library directory, where the C library goes (default: _internal)")
    parser.add_argument("--level", type=int, default=9, help="zlib level (default 9)")
    args = parser.parse_args(argv)

    for rel in (args.entry, args.libdir):
        check_rel(rel)
        if len(rel.encode("utf-8")) >= NAME_LEN:
            parser.error(f"{rel!r} is longer than {NAME_LEN - 1} bytes")
    if not (args.tree / args.entry).is_file():
        parser.error(f"{args.tree / args.entry} does not exist")
    launcher = args.launcher.read_bytes()
    if launcher[:4] != b"\x7fELF":
        parser.error(f"{args.launcher} is not an ELF executable")
    loader = carry_libc(args.tree, args.entry, args.libdir)
    data, count, raw = payload(args.tree, args.level)
    bundle_id = hashlib.sha256(data).hexdigest().encode("ascii")
    trailer = TRAILER.pack(len(launcher), len(data), bundle_id, args.entry.encode(), loader.encode(),
                           args.libdir.encode(), MAGIC)

    tmp = args.output.with_name(args.output.name + ".partial")
    with tmp.open("wb") as fh:
        fh.write(launcher)
        fh.write(data)
        fh.write(trailer)
    tmp.chmod(0o755)
    tmp.replace(args.output)
    print(
        f"make-bundle: {args.output}: {count} entries, {raw / 1e6:.1f} MB -> {len(data) / 1e6:.1f} MB payload, "
        f"id {bundle_id.decode()[:12]}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
