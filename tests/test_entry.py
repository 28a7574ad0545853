"""The binary's entry script (packaging/entry.py): modules of PyInstaller's PYZ are found by name first, with
PyInstaller's own loader, read through one descriptor (ours from the table the spec writes), and nothing
changes when the table cannot be used.

Run in a fresh interpreter set up as PyInstaller's bootstrap leaves it: sys._MEIPASS, PyInstaller's loader
modules (from the installed PyInstaller) and a PYZ reader over a file written here in PyInstaller's layout.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "packaging" / "entry.py"
MODULES_FILE = "ecr_kubelet-modules.marshal"
PYZ = {  # name: (typecode: 0 module, 1 package, source)
    "pkg": (1, "WHERE = 'pyz'"),
    "pkg.mod": (0, "WHERE = 'pyz'"),
    "ecr_kubelet_like": (0, "WHERE = 'pyz'"),
}


def _code(source: str, name: str) -> bytes:
    return marshal.dumps(compile(source, name, "exec"))


def _bundle(meipass: Path) -> None:
    """A PYZ-like file at an offset in a larger one (as in the executable), and a data file of the package."""
    blob, toc = b"HEADER", {}
    for name, (typecode, source) in PYZ.items():
        data = zlib.compress(_code(source, name), 0)
        toc[name] = (typecode, len(blob) - 6, len(data))
        blob += data
    (meipass / "program").write_bytes(blob + b"TRAILER")
    (meipass / "toc.json").write_text(json.dumps(toc))
    (meipass / "pkg").mkdir()
    (meipass / "pkg" / "data.txt").write_text("resource")


def _table(meipass: Path, *, python: str = sys.version) -> None:
    table = {"magic": importlib.util.MAGIC_NUMBER, "python": python,
             "modules": {"ecr_kubelet_like": (False, _code("WHERE = 'table'", "ecr_kubelet_like"))}}
    (meipass / MODULES_FILE).write_bytes(marshal.dumps(table, 2))


def _run(meipass: Path, *, pyz: bool = True) -> dict[str, object]:
    loader_dir = Path(pytest.importorskip("PyInstaller").__file__).parent / "loader"
    code = textwrap.dedent(f"""
        import importlib.resources, importlib.util, json, sys
        sys._MEIPASS = {str(meipass)!r}
        sys.path.insert(0, {str(loader_dir)!r})
        import pyimod02_importers

        class Reader:  # what the bootstrap's PYZ reader offers the loader
            toc = {{k: tuple(v) for k, v in json.load(open({str(meipass / "toc.json")!r})).items()}}
            _filename, _start_offset = {str(meipass / "program")!r}, 6

        pyimod02_importers.pyz_archive = Reader() if {pyz!r} else None
        spec = importlib.util.spec_from_file_location("entry", {str(ENTRY)!r})
        entry = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(entry)
        entry._faster_imports()
        result = {{"finder": type(sys.meta_path[0]).__name__}}
        try:
            import pkg.mod, ecr_kubelet_like
        except ImportError as exc:
            result["error"] = str(exc)
        else:
            result.update(
                where=[pkg.WHERE, pkg.mod.WHERE, ecr_kubelet_like.WHERE],
                loader=type(pkg.mod.__loader__).__name__,
                files=[pkg.__file__, pkg.mod.__file__],
                package_path=list(pkg.__path__),
                resource=importlib.resources.files("pkg").joinpath("data.txt").read_text(),
            )
        print(json.dumps(result))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_modules_of_the_pyz_are_found_by_name_with_pyinstallers_loader(tmp_path: Path) -> None:
    _bundle(tmp_path)
    _table(tmp_path)
    result = _run(tmp_path)
    assert result["finder"] == "_Finder"
    assert result["loader"] == "PyiFrozenLoader"
    assert result["where"] == ["pyz", "pyz", "table"]  # ours from the table, the rest read from the PYZ
    assert result["files"] == [str(tmp_path / "pkg" / "__init__.py"), str(tmp_path / "pkg" / "mod.py")]
    assert result["package_path"] == [str(tmp_path / "pkg")]
    assert result["resource"] == "resource"  # importlib.resources through PyInstaller's reader


def test_a_table_for_another_python_damaged_or_missing_leaves_ours_to_the_pyz(tmp_path: Path) -> None:
    for case in ("other-python", "damaged", "missing"):
        meipass = tmp_path / case
        meipass.mkdir()
        _bundle(meipass)
        if case == "other-python":
            _table(meipass, python="3.0.0 (elsewhere)")
        elif case == "damaged":
            _table(meipass)
            data = (meipass / MODULES_FILE).read_bytes()
            (meipass / MODULES_FILE).write_bytes(data[: len(data) // 2])
        result = _run(meipass)
        assert result["finder"] == "_Finder", case
        assert result["where"] == ["pyz", "pyz", "pyz"], case


def test_without_pyinstallers_archive_nothing_is_put_first(tmp_path: Path) -> None:
    _bundle(tmp_path)
    _table(tmp_path)
    result = _run(tmp_path, pyz=False)
    assert result["finder"] != "_Finder"
    assert "error" in result  # nothing else here could import them
