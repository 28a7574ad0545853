"""Make a PyInstaller one-dir tree independent of the node's C library.

PyInstaller leaves glibc out of its bundles on purpose (a program must use the system's), which
ties the bundle to nodes whose glibc is at least the build machine's. We instead carry the build
machine's glibc and run the bundle through its own dynamic loader (packaging/launcher.c execs
``<loader> --library-path <libdir> <entry>``), so the bundle needs nothing from the node but the
kernel. The loader and libc must come from the same glibc build, so both are copied from the build
machine, together with every other library some file in the tree needs (DT_NEEDED) and lacks.

``check_closure`` is also what the tests use to hold the result: every DT_NEEDED of every ELF file
is in the library directory, and no file asks for a GLIBC_x.y version the carried libc lacks.

ELF parsing is pyelftools' (a maintained library), not ours.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection
from elftools.elf.segments import InterpSegment

# Loaded with dlopen() by glibc itself (pthread_cancel, backtrace), so no DT_NEEDED names it.
DLOPENED_BY_LIBC = ("libgcc_s.so.1",)
GLIBC_VERSION = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.(\d+))?$")


@dataclass
class ElfInfo:
    interp: str | None = None
    needed: list[str] = field(default_factory=list)
    required_versions: set[str] = field(default_factory=set)  # SHT_GNU_verneed names
    defined_versions: set[str] = field(default_factory=set)  # SHT_GNU_verdef names
    machine: str = ""


def elf_info(path: Path) -> ElfInfo | None:
    """What an ELF file asks of the dynamic loader, or None when it is not an ELF file."""
    with path.open("rb") as fh:
        if fh.read(4) != b"\x7fELF":
            return None
        fh.seek(0)
        try:
            elf = ELFFile(fh)
        except ELFError:
            return None
        info = ElfInfo(machine=elf["e_machine"])
        for seg in elf.iter_segments():
            if isinstance(seg, InterpSegment):
                info.interp = seg.get_interp_name()
        for sec in elf.iter_sections():
            if isinstance(sec, DynamicSection):
                # pyelftools sets .needed on DT_NEEDED tags only, hence getattr.
                info.needed.extend(str(getattr(t, "needed")) for t in sec.iter_tags() if t.entry.d_tag == "DT_NEEDED")  # noqa: B009
            elif isinstance(sec, GNUVerNeedSection):
                for _verneed, auxes in sec.iter_versions():
                    info.required_versions.update(aux.name for aux in auxes)
            elif isinstance(sec, GNUVerDefSection):
                for _verdef, auxes in sec.iter_versions():
                    info.defined_versions.update(aux.name for aux in auxes)
        return info


def glibc_version(names: Iterable[str]) -> tuple[int, ...]:
    """The highest GLIBC_x.y among symbol version names, (0,) when there is none."""
    found = [GLIBC_VERSION.match(n) for n in names]
    return max((tuple(int(g) for g in m.groups() if g is not None) for m in found if m), default=(0,))


def elf_files(tree: Path) -> Iterator[tuple[Path, ElfInfo]]:
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = elf_info(path)
            if info is not None:
                yield path, info


def search_dirs(loader: Path) -> list[Path]:
    """Where the build machine's loader finds system libraries (its own directory first)."""
    dirs = [loader.parent]
    for top in ("/lib", "/usr/lib", "/lib64", "/usr/lib64"):
        base = Path(top)
        dirs.append(base / loader.parent.name)  # the multiarch directory, e.g. x86_64-linux-gnu
        dirs.append(base)
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [s.resolve() for s in seen]:
            seen.append(d)
    return seen


def find_library(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        candidate = d / name
        if candidate.is_file():
            return candidate.resolve()
    return None


# glibc's loader always reads /etc/ld.so.preload (rtld.c: a hard-coded path, no option or
# variable turns it off). A node's preload library built for a newer glibc than the carried one
# would stop every run ("version GLIBC_2.xx not found"), so the carried loader gets a path of the
# same length that can never name a file (a path under /dev/null). The node's own programs,
# including those the plugin starts, still use the node's loader and preloads.
NODE_PRELOAD = b"/etc/ld.so.preload\0"
NO_PRELOAD = b"/dev/null/preloads\0"


def without_node_preload(loader: bytes) -> bytes:
    if loader.count(NODE_PRELOAD) != 1:
        raise SystemExit(f"carry_libc: the loader names {NODE_PRELOAD[:-1].decode()} "
                         f"{loader.count(NODE_PRELOAD)} times, expected once")
    return loader.replace(NODE_PRELOAD, NO_PRELOAD)


def carry_libc(tree: Path, entry: str, libdir: str) -> str:
    """Copy the loader and the missing libraries into tree/libdir; return the loader's tree path."""
    lib = tree / libdir
    info = elf_info(tree / entry)
    if info is None or not info.interp:
        raise SystemExit(f"carry_libc: {entry} is not a dynamically linked ELF executable")
    loader_src = Path(info.interp).resolve()
    loader_name = Path(info.interp).name
    if not re.fullmatch(r"ld-[^.]+\.so\.\d+", loader_name):
        # PyInstaller's bootloader recognises its loader by this pattern when it restarts itself.
        raise SystemExit(f"carry_libc: unexpected loader name {loader_name!r}")
    if (lib / loader_name).is_file() and not check_closure(tree, libdir, loader_name):
        return f"{libdir}/{loader_name}"  # already self-contained (a tree unpacked from a bundle)
    (lib / loader_name).write_bytes(without_node_preload(loader_src.read_bytes()))
    os.chmod(lib / loader_name, 0o755)  # noqa: S103  (executables and libraries, as PyInstaller writes them)
    dirs = search_dirs(loader_src)
    wanted = set(DLOPENED_BY_LIBC)
    while True:
        present = {p.name for p in lib.iterdir()}
        for _path, elf in elf_files(tree):
            wanted.update(elf.needed)
        missing = sorted(wanted - present - {loader_name})
        if not missing:
            break
        for name in missing:
            src = find_library(name, dirs)
            if src is None:
                raise SystemExit(f"carry_libc: {name} is needed but not found in {', '.join(map(str, dirs))}")
            shutil.copyfile(src, lib / name)
            os.chmod(lib / name, 0o755)  # noqa: S103
    problems = check_closure(tree, libdir, loader_name)
    if problems:
        raise SystemExit("carry_libc: the tree is not self-contained:\n  " + "\n  ".join(problems))
    return f"{libdir}/{loader_name}"


def check_closure(tree: Path, libdir: str, loader_name: str) -> list[str]:
    """Problems that would make the tree use the node's libraries or fail on an older node."""
    lib = tree / libdir
    present = {p.name for p in lib.iterdir()} if lib.is_dir() else set()
    problems = []
    libc = lib / "libc.so.6"
    libc_info = elf_info(libc) if libc.is_file() else None
    if libc_info is None:
        return [f"{libdir}/libc.so.6 is missing"]
    if loader_name not in present:
        problems.append(f"{libdir}/{loader_name} (the loader) is missing")
    carried = glibc_version(libc_info.defined_versions)
    machines = set()
    for path, elf in elf_files(tree):
        rel = path.relative_to(tree).as_posix()
        machines.add(elf.machine)
        for name in elf.needed:
            if name not in present:
                problems.append(f"{rel} needs {name}, which is not in {libdir}/")
        needed = glibc_version(elf.required_versions)
        if needed > carried:
            problems.append(f"{rel} needs GLIBC_{'.'.join(map(str, needed))}, the carried libc has "
                            f"{'.'.join(map(str, carried))}")
    if len(machines) > 1:
        problems.append(f"ELF files for more than one machine: {sorted(machines)}")
    return problems


if __name__ == "__main__":
    # check_closure from the command line: carry_libc.py TREE LIBDIR LOADER_NAME
    issues = check_closure(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("\n".join(issues) or "self-contained")
    sys.exit(1 if issues else 0)
