"""The binary's entry script (packaging/entry.py): our modules come from the table the spec writes, as
PyInstaller's importer would give them, and nothing changes when the table cannot be used."""

from __future__ import annotations

import importlib.util
import json
import marshal
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "packaging" / "entry.py"
SRC = ROOT / "src" / "ecr_kubelet"
LEFT_OUT = "ecr_kubelet.diagnose"  # not in the test's table: found on the package path, as in the PYZ


def _table(*, python: str = sys.version, extra: dict[str, str] | None = None) -> bytes:
    modules: dict[str, tuple[bool, bytes]] = {}
    for path in sorted(SRC.glob("*.py")):
        name = "ecr_kubelet" if path.stem == "__init__" else f"ecr_kubelet.{path.stem}"
        if name != LEFT_OUT:
            modules[name] = (path.stem == "__init__", marshal.dumps(compile(path.read_text(), str(path), "exec")))
    for name, source in (extra or {}).items():
        modules[name] = (False, marshal.dumps(compile(source, name, "exec")))
    return marshal.dumps({"magic": importlib.util.MAGIC_NUMBER, "python": python, "modules": modules}, 2)


def _run(meipass: Path) -> dict[str, object]:
    """Imports as the binary does after entry.py set up (sys._MEIPASS is PyInstaller's bundle directory)."""
    (meipass / "ecr_kubelet").symlink_to(SRC)  # the package directory PyInstaller's importer serves the rest from
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        sys._MEIPASS = {str(meipass)!r}
        spec = importlib.util.spec_from_file_location("entry", {str(ENTRY)!r})
        entry = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(entry)
        entry._serve_our_modules()
        import ecr_kubelet.cli, {LEFT_OUT}
        result = {{
            "finder": type(sys.meta_path[0]).__name__,
            "cli_loader": type(ecr_kubelet.cli.__loader__).__name__,
            "cli_file": ecr_kubelet.cli.__file__,
            "package_path": list(ecr_kubelet.__path__),
            "left_out_file": {LEFT_OUT}.__file__,
        }}
        try:
            import ecr_kubelet_table_only
            result["table_only"] = ecr_kubelet_table_only.VALUE
        except ImportError:
            result["table_only"] = None
        print(json.dumps(result))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_our_modules_are_imported_from_the_table_as_pyinstaller_would_place_them(tmp_path: Path) -> None:
    (tmp_path / "ecr_kubelet-modules.marshal").write_bytes(_table(extra={"ecr_kubelet_table_only": "VALUE = 1"}))
    result = _run(tmp_path)
    assert result["finder"] == "_OurModules"
    assert result["cli_loader"] == "_OurModules"
    assert result["table_only"] == 1  # the table's code ran
    assert result["cli_file"] == str(tmp_path / "ecr_kubelet" / "cli.py")
    assert result["package_path"] == [str(tmp_path / "ecr_kubelet")]
    # a module the table does not hold is found on the package's path by the other finders
    assert result["left_out_file"] == str(tmp_path / "ecr_kubelet" / "diagnose.py")


def test_a_table_for_another_python_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "ecr_kubelet-modules.marshal").write_bytes(
        _table(python="3.0.0 (elsewhere)", extra={"ecr_kubelet_table_only": "VALUE = 1"}))
    result = _run(tmp_path)
    assert result["finder"] != "_OurModules" and result["cli_loader"] != "_OurModules"
    assert result["table_only"] is None


def test_a_damaged_or_missing_table_is_not_used(tmp_path: Path) -> None:
    good = _table()
    for name, data in (("damaged", good[: len(good) // 2]), ("missing", None)):
        meipass = tmp_path / name
        meipass.mkdir()
        if data is not None:
            (meipass / "ecr_kubelet-modules.marshal").write_bytes(data)
        result = _run(meipass)
        assert result["finder"] != "_OurModules" and result["cli_loader"] != "_OurModules", name
