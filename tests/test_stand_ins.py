"""The stand-ins for botocore.docs and urllib3.http2, checked against the installed packages."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ecr_kubelet import pinned
from ecr_kubelet.stand_ins import STAND_INS
from frozen import prelude
from helpers import StubClient, make_request

ROOT = Path(__file__).resolve().parent.parent
# What the stand-ins exist to keep out of a cache miss.
HEAVY = ("html.parser", "botocore.docs.bcdoc", "botocore.docs.method", "importlib.metadata", "zipfile")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def _module_dir(module: str) -> Path:
    parent, _, child = module.rpartition(".")
    return _package_dir(parent) / child


def _submodules(module: str) -> set[str]:
    base = _module_dir(module)
    if not base.is_dir():
        return set()
    return {p.stem for p in base.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()} - {"__init__"}


def _under_a_stand_in(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in STAND_INS)


def _imports_from_stand_ins(package: str) -> set[tuple[str, str, str | None]]:
    """(file, module, name) for every import in the package's source of a stand-in or of a module
    under one: `from module import name`, or `import module` (name None)."""
    base = _package_dir(package)
    found: set[tuple[str, str, str | None]] = set()
    for path in base.rglob("*.py"):
        where = str(path.relative_to(base.parent))
        here = list(path.relative_to(base.parent).parent.parts)  # the package the file is in
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                anchor = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join([*anchor, *([node.module] if node.module else [])])
                if _under_a_stand_in(module):
                    found.update((where, module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update((where, alias.name, None) for alias in node.names if _under_a_stand_in(alias.name))
    return found


def _real_module_exists(module: str) -> bool:
    parent, _, child = module.rpartition(".")
    return child in _submodules(parent)


def _defined(module: str) -> set[str]:
    """Top-level names the real module's source binds."""
    base = _module_dir(module)
    source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    names = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


@pytest.mark.parametrize("package", ["botocore", "urllib3"])
def test_every_name_imported_from_a_stand_in_is_in_it_or_a_real_submodule(package: str) -> None:
    uses = _imports_from_stand_ins(package)
    assert uses  # the scan finds the imports the stand-ins are for
    missing = []
    for where, module, name in uses:
        if module in STAND_INS:
            ok = name is None or name in STAND_INS[module] or name in _submodules(module)
        else:  # a submodule: the stand-in package's __path__ must lead to the real one
            ok = _real_module_exists(module)
        if not ok:
            missing.append((where, module, name))
    assert not missing, f"stand-ins lack names their users import: {sorted(missing)}"


def test_the_stand_ins_hold_only_names_the_real_modules_define() -> None:
    for module, names in STAND_INS.items():
        assert set(names) <= _defined(module), module


def test_every_other_name_of_the_real_modules_loads_them_through_the_stand_in() -> None:
    """Other users of these modules in the same process (boto3 imports botocore.docs'
    DEPRECATED_SERVICE_NAMES, botocore.docs.docstring's LazyLoadedDocstring) find what they import."""
    # Not dunders: the import system asks stand-ins for __path__ and the like (see _from_real).
    names = {module: sorted(n for n in _defined(module) - set(STAND_INS[module]) if not n.startswith("__"))
             for module in STAND_INS}
    out = _python(prelude() + textwrap.dedent(f"""
        import importlib, json, sys
        import ecr_kubelet.awsapi
        found = {{}}
        for module, names in {names!r}.items():
            stand_in = importlib.import_module(module)
            assert stand_in.__spec__.loader.__module__ == "ecr_kubelet.stand_ins", module
            found[module] = [name for name in names if hasattr(stand_in, name)]
        print(json.dumps(found))
    """))
    assert json.loads(out) == names
    assert names["botocore.docs"] and names["botocore.docs.docstring"]  # the check checks something


@pytest.mark.skipif(importlib.util.find_spec("boto3") is None, reason="boto3 is not installed")
def test_boto3_works_beside_the_stand_ins() -> None:
    out = _python(prelude() + textwrap.dedent("""
        import ecr_kubelet.awsapi, sys
        assert sys.meta_path[0].__module__ == "ecr_kubelet.stand_ins"
        import boto3
        session = boto3.session.Session(region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                                        aws_secret_access_key="not-a-secret")
        print(session.client("ecr").meta.endpoint_url)
    """))
    assert out.strip() == "https://api.ecr.eu-west-1.amazonaws.com"


def _python(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          env={**(env or os.environ), "PYTHONPATH": str(ROOT / "src")}, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


CLIENT_DOCS = """
    import json, sys
    {setup}
    import botocore.session
    client = botocore.session.Session().create_client(
        "ecr", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="not-a-secret")
    loaded = [name for name in {heavy!r} if name in sys.modules]
    doc = client.get_authorization_token.__doc__
    print(json.dumps({{"loaded": loaded, "str": str(doc), "expandtabs": doc.expandtabs(4),
                      "type": type(doc).__module__}}))
"""


def test_a_client_made_with_the_stand_ins_loads_none_of_them_and_documents_itself_as_botocore_does() -> None:
    ours = json.loads(_python(prelude() + textwrap.dedent(CLIENT_DOCS.format(setup="import ecr_kubelet.awsapi",
                                                                          heavy=HEAVY))))
    botocore = json.loads(_python(CLIENT_DOCS.format(setup="", heavy=HEAVY)))
    assert ours["type"] == "ecr_kubelet.stand_ins" and botocore["type"] == "botocore.docs.docstring"
    assert ours["loaded"] == []
    assert "importlib.metadata" in botocore["loaded"] and "html.parser" in botocore["loaded"]
    assert ours["str"] == botocore["str"] and "authorization token" in ours["str"]
    assert ours["expandtabs"] == botocore["expandtabs"]


def test_urllib3_http2_functions_are_the_real_ones() -> None:
    out = _python(prelude() + textwrap.dedent("""
        import ecr_kubelet.awsapi, sys, urllib3.http2
        assert urllib3.http2.__spec__.loader.__module__ == "ecr_kubelet.stand_ins"
        assert "importlib.metadata" not in sys.modules
        try:
            urllib3.http2.inject_into_urllib3()  # checks the h2 package's version first
        except Exception as exc:
            print(type(exc).__module__, type(exc).__name__)
        else:
            urllib3.http2.extract_from_urllib3()
            print("injected")
        print(urllib3.http2.probe.__file__)
    """))
    outcome, probe = out.splitlines()
    # Without h2 installed the real function fails looking it up; with it, it injects.
    h2 = importlib.util.find_spec("h2") is not None
    assert outcome == ("injected" if h2 else "importlib.metadata PackageNotFoundError")
    assert probe.startswith(str(_package_dir("urllib3")))


@pytest.mark.e2e
def test_a_cache_miss_loads_none_of_what_the_stand_ins_keep_out(stub: StubClient,
                                                                 provider_env: dict[str, str]) -> None:
    code = f"""
        import atexit, sys
        atexit.register(lambda: print([m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr))
        from ecr_kubelet.cli import main
        sys.exit(main())
    """
    request = json.dumps(make_request("123456789012.dkr.ecr.us-east-1.amazonaws.com/app"))
    proc = subprocess.run([sys.executable, "-c", prelude() + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, input=request,
                          env={**provider_env, "PYTHONPATH": str(ROOT / "src")}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["auth"]
    assert len(stub.calls(action="GetAuthorizationToken")) == 1
    assert proc.stderr.splitlines()[-1] == "[]"


LOADERS = """
    import json, sys
    import ecr_kubelet.awsapi
    import botocore.client, botocore.docs.docstring, urllib3.http2
    print(json.dumps({name: sys.modules[name].__spec__.loader.__module__ == "ecr_kubelet.stand_ins"
                      for name in ("botocore.docs", "botocore.docs.docstring", "urllib3.http2")}))
"""


@pytest.mark.parametrize("package", pinned.PACKAGES)
def test_in_the_binary_a_package_of_another_version_than_the_recorded_one_loads_its_real_modules(package: str) -> None:
    recorded = {**pinned.versions(), package: "0.0.0"}
    stand_ins = json.loads(_python(prelude(recorded) + textwrap.dedent(LOADERS)))
    assert stand_ins == {name: not name.startswith(package) for name in stand_ins}


def test_outside_the_binary_there_are_no_stand_ins() -> None:
    """A pip install, with whatever botocore and urllib3: their own modules, and no finder of ours."""
    code = LOADERS.replace("print(", "assert all(f.__module__ != 'ecr_kubelet.stand_ins' for f in sys.meta_path)\n"
                                     "    print(")
    assert set(json.loads(_python(textwrap.dedent(code))).values()) == {False}
