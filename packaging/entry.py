"""PyInstaller entry point of the ``ecr-credential-provider`` binary."""

import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from typing import Any


def _restore_environment() -> None:
    """Undo what the launcher and PyInstaller's bootloader set for themselves.

    The bootloader points LD_LIBRARY_PATH at the bundle (keeping the node's value in
    LD_LIBRARY_PATH_ORIG); a program we start (a credential_process) must not inherit it, or the
    node's binaries would load the bundle's glibc with the node's loader. The launcher passes the
    name it was invoked as (for example docker-credential-ecr-login) in ECR_KUBELET_ARGV0 and the
    node's LD_PRELOAD in ECR_KUBELET_LD_PRELOAD.
    """
    orig = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if orig is not None:
        os.environ["LD_LIBRARY_PATH"] = orig
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)
    # The launcher keeps the node's LD_PRELOAD away from the carried loader (a library built for
    # a newer glibc would stop it) and passes it here, for the node's own programs.
    preload = os.environ.pop("ECR_KUBELET_LD_PRELOAD", None)
    if preload is not None:
        os.environ["LD_PRELOAD"] = preload
    argv0 = os.environ.pop("ECR_KUBELET_ARGV0", None)
    if argv0:
        sys.argv[0] = argv0


# Our own modules, as one table written by the spec (the same code objects as in PyInstaller's PYZ);
# the spec and packaging/sbom.py import the name from here (importing this module does nothing else).
MODULES_FILE = "ecr_kubelet-modules.marshal"


class _Archive:
    """PyInstaller's PYZ reader, as its loader uses it (`extract`), reading through one descriptor kept open:
    its own opens the executable again for every module (about 0.05 ms each; a miss imports 346 modules).
    Our modules come from MODULES_FILE's table, read at once (a hit imports 25 of them)."""

    def __init__(self, pyz: "Any", ours: dict[str, bytes]) -> None:
        import marshal
        import zlib

        self.toc = pyz.toc
        self.ours = ours
        self.start = pyz._start_offset
        self.fd = os.open(pyz._filename, os.O_RDONLY | os.O_CLOEXEC)
        self.loads, self.decompress = marshal.loads, zlib.decompress

    def extract(self, name: str, raw: bool = False) -> "Any":
        data = self.ours.get(name)
        if data is None:
            _typecode, offset, length = self.toc[name]
            data = self.decompress(os.pread(self.fd, length, self.start + offset))
        return data if raw else self.loads(data)


class _Finder:
    """The spec PyInstaller's path finder gives a module of its PYZ (pyimod02_importers.PyiFrozenFinder, for
    a module on the path it was collected from), with its loader, found by full name from the first place
    on sys.meta_path: its finder is reached through the path finder, in Python, for every import."""

    def __init__(self, archive: _Archive, loader_type: "Any") -> None:
        import _frozen_importlib

        self.archive = archive
        self.loader_type = loader_type
        self.spec_type = _frozen_importlib.ModuleSpec

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> "ModuleSpec | None":
        entry = self.archive.toc.get(fullname)
        if entry is None or entry[0] not in (PYZ_MODULE, PYZ_PACKAGE):
            return None  # not in the PYZ, or a namespace package: the other finders' (PyInstaller's among them)
        is_package = entry[0] == PYZ_PACKAGE
        loader = self.loader_type(name=fullname, pyz_archive=self.archive, pyz_entry_name=fullname,
                                  is_package=is_package)
        spec = self.spec_type(fullname, loader, is_package=is_package, origin=loader.path)
        spec.has_location = True
        if is_package:
            spec.submodule_search_locations = [os.path.dirname(loader.path)]
        return spec


PYZ_MODULE, PYZ_PACKAGE = 0, 1  # pyimod01_archive.PYZ_ITEM_MODULE, PYZ_ITEM_PKG


def _faster_imports() -> None:
    """Put _Finder first on sys.meta_path, for PyInstaller 6.22.3's importer (the spec builds with no other);
    on any error PyInstaller's own finder imports everything, as it would anyway."""
    try:
        import _frozen_importlib_external
        import marshal

        import pyimod02_importers  # type: ignore[import-not-found]

        meipass = sys._MEIPASS  # type: ignore[attr-defined]
        ours: dict[str, bytes] = {}
        try:
            with open(os.path.join(meipass, MODULES_FILE), "rb") as fh:
                table = marshal.loads(fh.read())  # noqa: S302 (our own file, in the bundle the launcher verified)
            if table["magic"] == _frozen_importlib_external.MAGIC_NUMBER and table["python"] == sys.version:
                ours = {name: code for name, (_is_package, code) in table["modules"].items()}
        except (OSError, ValueError, EOFError, TypeError, KeyError):
            pass  # read from the PYZ instead
        archive = _Archive(pyimod02_importers.pyz_archive, ours)
        finder = _Finder(archive, pyimod02_importers.PyiFrozenLoader)
    except Exception:  # PyInstaller's importer has every module
        return
    sys.meta_path.insert(0, finder)


if __name__ == "__main__":
    # A run answers one request and exits (botocore clients are kept for the whole run anyway), so
    # there is no garbage worth collecting; the collector's passes over the objects created while
    # importing botocore cost ~8 ms of a cache miss. gc, os and sys were loaded by the bootstrap already.
    gc.disable()
    _restore_environment()
    _faster_imports()
    from ecr_kubelet.cli import run

    run()
