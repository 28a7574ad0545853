#!/usr/bin/env python3
"""CycloneDX SBOM of one release binary, from the Debian build root it was built in.

Usage: sbom.py --root BUILD_ROOT --tree ONEDIR_TREE --binary RELEASE_BINARY --arch ARCH --out FILE

What the binary contains, each with version, licence and package URL:

* every file of the bundle (the PyInstaller one-dir tree that the launcher unpacks), traced to the
  Debian package that installed it in the build root (dpkg's file lists): glibc, OpenSSL, zlib,
  libffi, libexpat, libgcc, CPython's libpython and its extension modules, ...; or to the Python
  distribution whose RECORD lists it; the rest (the bootloader with the program's bytecode, the
  frozen standard library) to PyInstaller and CPython. Every bundled file is named in the
  ``ecr-kubelet:file`` properties of exactly one component, and a file that cannot be traced fails
  the build, so the SBOM cannot silently miss something;
* the Python distributions the program runs with (ecr-kubelet's runtime requirements, resolved in
  the build virtualenv, and certifi, whose CA file is bundled);
* the launcher, with the static libraries linked into it (zlib, libmd, glibc's libc.a).

Licences: the ``License-Expression``/``License`` metadata of Python distributions; for Debian
packages the machine-readable copyright file's ``Files: *`` licence when there is one, else the
table below, read by hand from those packages' copyright files. The document is validated against
the CycloneDX 1.6 JSON schema by cyclonedx-python-lib before it is written.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import re
import sys
import uuid
from importlib.metadata import Distribution, PackageMetadata, distribution, distributions
from pathlib import Path

from cyclonedx import spdx
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import LicenseExpression
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from entry import MODULES_FILE
from packageurl import PackageURL
from packaging.requirements import Requirement

from ecr_kubelet.compiled_re import FILE as COMPILED_PATTERNS

ROOT = Path(__file__).resolve().parent.parent

# Debian packages whose copyright file has no machine-readable "Files: *" licence (by source
# package), or whose library has another licence than the source's "Files: *" (by binary package).
DEBIAN_LICENSES = {
    "libuuid1": "BSD-3-Clause",
    "glibc": "LGPL-2.1-or-later",
    "python3.11": "PSF-2.0",
    "gcc-12": "GPL-3.0-or-later WITH GCC-exception-3.1",
    "openssl": "Apache-2.0",
    "zlib": "Zlib",
}
PYINSTALLER_LICENSE = "GPL-2.0-or-later WITH Bootloader-exception"
DEB_ARCH = {"amd64": "amd64", "arm64": "arm64"}


def dpkg_status(root: Path) -> dict[str, dict[str, str]]:
    """Installed packages of the root: name -> control fields."""
    out: dict[str, dict[str, str]] = {}
    for para in (root / "var/lib/dpkg/status").read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields and "installed" in fields.get("Status", ""):
            out[fields["Package"]] = fields
    return out


def dpkg_files(root: Path) -> dict[str, str]:
    """File basename -> owning package (for files under lib directories; first owner wins)."""
    owners: dict[str, str] = {}
    for listing in sorted((root / "var/lib/dpkg/info").glob("*.list")):
        pkg = listing.name[: -len(".list")].split(":")[0]
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            if "/lib" in line and not line.endswith("/"):
                owners.setdefault(Path(line).name, pkg)
    return owners


def debian_license(root: Path, pkg: str, source: str) -> str:
    if pkg in DEBIAN_LICENSES:
        return DEBIAN_LICENSES[pkg]
    copyright_file = root / "usr/share/doc" / pkg / "copyright"
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    if text.startswith("Format:"):
        for para in text.split("\n\n"):
            if re.search(r"^Files:\s*(\n\s+)?\*\s*$", para, re.MULTILINE):
                m = re.search(r"^License:\s*(\S.*)$", para, re.MULTILINE)
                if m:
                    return spdx_from_debian(m.group(1).strip())
    if source in DEBIAN_LICENSES:
        return DEBIAN_LICENSES[source]
    raise SystemExit(f"sbom: no licence known for Debian package {pkg} (source {source}); add it to DEBIAN_LICENSES")


def spdx_from_debian(name: str) -> str:
    """Debian's short licence names to SPDX identifiers (the ones our packages use)."""
    table = {"bsd-3-clause": "BSD-3-Clause", "expat": "MIT", "zlib": "Zlib", "apache-2.0": "Apache-2.0",
             "gpl-2+": "GPL-2.0-or-later", "lgpl-2.1+": "LGPL-2.1-or-later", "mit": "MIT", "isc": "ISC"}
    return table.get(name.lower(), name)


def field(meta: PackageMetadata, name: str) -> str:
    values = meta.get_all(name) or []
    return str(values[0]).strip() if values else ""


def python_license(dist: Distribution) -> str:
    """SPDX expression: License-Expression, else the licence classifiers, else a short License field."""
    meta = dist.metadata
    expr = field(meta, "License-Expression")
    if expr:
        return expr
    by_classifier = {"MIT License": "MIT", "Apache Software License": "Apache-2.0", "BSD License": "BSD-3-Clause",
                     "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
                     "Python Software Foundation License": "PSF-2.0"}
    lic = field(meta, "License")
    if spdx.is_supported_id(lic):
        return lic
    found = [by_classifier[c.split(" :: ")[-1]] for c in meta.get_all("Classifier") or []
             if c.startswith("License ::") and c.split(" :: ")[-1] in by_classifier]
    if found:
        return " AND ".join(sorted(set(found)))
    raise SystemExit(f"sbom: no licence in the metadata of {meta['Name']}")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_version() -> str:
    m = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    if not m:
        raise SystemExit("sbom: no version in pyproject.toml")
    return m.group(1)


def project_requirements() -> list[str]:
    """ecr-kubelet's runtime requirements, from its installed metadata (scripts/setup installs it)."""
    dist = distribution("ecr-kubelet")
    if dist.version != project_version():
        raise SystemExit("sbom: the installed ecr-kubelet is not this checkout's version (run scripts/setup)")
    return [r for r in dist.requires or [] if "extra ==" not in r]


def runtime_distributions(site: Path) -> dict[str, Distribution]:
    """ecr-kubelet's runtime requirements, resolved in the build virtualenv, plus certifi."""
    dists = {norm(d.metadata["Name"]): d for d in distributions(path=[str(site)])}
    todo = [Requirement(r) for r in project_requirements()] + [Requirement("certifi")]
    seen: dict[str, Distribution] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = norm(req.name)
        if key in seen:
            continue
        if key not in dists:
            raise SystemExit(f"sbom: {req.name} is required but not installed in {site}")
        seen[key] = dists[key]
        todo.extend(Requirement(r) for r in dists[key].requires or [])
    return seen


def component(
    name: str, version: str, license_expr: str, purl: PackageURL, ctype: ComponentType = ComponentType.LIBRARY,
    props: list[tuple[str, str]] | None = None, description: str | None = None,
) -> Component:
    comp = Component(type=ctype, name=name, version=version, purl=purl, bom_ref=purl.to_string(),
                     licenses=[LicenseExpression(license_expr)], description=description)
    for key, value in props or []:
        comp.properties.add(Property(name=key, value=value))
    return comp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--binary", type=Path, required=True)
    ap.add_argument("--arch", required=True, choices=sorted(DEB_ARCH))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    status = dpkg_status(args.root)
    owners = dpkg_files(args.root)
    site = next((args.root / "build/venv/lib").glob("python3*/site-packages"))
    py = runtime_distributions(site)
    all_dists = {norm(d.metadata["Name"]): d for d in distributions(path=[str(site)])}
    record_owner: dict[str, str] = {}
    for key, dist in all_dists.items():
        for f in dist.files or []:
            record_owner[str(f).replace("\\", "/")] = key
    version = project_version()

    files: dict[str, list[str]] = {}  # component key -> bundled files
    internal = args.tree / "_internal"
    for path in sorted(p for p in args.tree.rglob("*") if p.is_file()):
        rel = path.relative_to(args.tree).as_posix()
        inner = path.relative_to(internal).as_posix() if path.is_relative_to(internal) else ""
        if rel == "ecr-credential-provider":
            key = "pypi:pyinstaller"  # bootloader, with the program's bytecode archive appended
        elif inner == "base_library.zip":
            key = "deb:libpython3.11-stdlib"  # the frozen standard library
        elif inner == COMPILED_PATTERNS:
            key = "own:compiled-patterns"  # made by the build itself (packaging/re_cache.py)
        elif inner == MODULES_FILE:
            key = "own:modules"  # made by the build itself (the spec, from the bytecode archive)
        elif inner in record_owner:
            key = f"pypi:{record_owner[inner]}"
        elif path.name in owners:
            key = f"deb:{owners[path.name]}"
        else:
            pkg_dir = inner.split("/")[0]
            match = next((k for k in all_dists if pkg_dir and norm(pkg_dir).startswith(k)), None)
            if match is None:
                raise SystemExit(f"sbom: cannot trace bundled file {rel} to a package")
            key = f"pypi:{match}"
        files.setdefault(key, []).append(rel)

    binary_sha = hashlib.sha256(args.binary.read_bytes()).hexdigest()
    # Reproducible like the binary: the serial number follows from the binary, the date from
    # SOURCE_DATE_EPOCH (scripts/release sets it to the commit's time).
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"ecr-kubelet:sbom:{binary_sha}"))
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        bom.metadata.timestamp = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    app = component("ecr-credential-provider", version, "Apache-2.0",
                    PackageURL("generic", name="ecr-credential-provider", version=version,
                               qualifiers={"arch": args.arch}),
                    ComponentType.APPLICATION, description="Kubelet image credential provider for Amazon ECR")
    app.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=binary_sha))
    bom.metadata.component = app

    def deb_component(pkg: str, props: list[tuple[str, str]]) -> Component:
        fields = status[pkg]
        source = fields.get("Source", pkg).split()[0]
        return component(pkg, fields["Version"], debian_license(args.root, pkg, source),
                         PackageURL("deb", "debian", pkg, fields["Version"],
                                    qualifiers={"arch": fields.get("Architecture", DEB_ARCH[args.arch]),
                                                "distro": "debian-12"}),
                         props=[("ecr-kubelet:debian-source", source), *props])

    patterns = files.pop("own:compiled-patterns", [])
    if patterns:
        bom.components.add(component("ecr-kubelet-compiled-patterns", version, "Apache-2.0",
                                     PackageURL("generic", name="ecr-kubelet-compiled-patterns", version=version),
                                     props=[("ecr-kubelet:file", f) for f in patterns],
                                     description="the bundled program's regular expressions, compiled at build "
                                     "time by its own Python (packaging/re_cache.py)"))
    modules = files.pop("own:modules", [])
    if modules:
        bom.components.add(component("ecr-kubelet-modules", version, "Apache-2.0",
                                     PackageURL("generic", name="ecr-kubelet-modules", version=version),
                                     props=[("ecr-kubelet:file", f) for f in modules],
                                     description="the bundled program's own modules (and the standard library's "
                                     "__future__), byte-compiled by its own Python: the code objects of its bytecode "
                                     "archive, in one table (packaging/entry.py)"))
    keys = sorted(set(files) | {f"pypi:{k}" for k in py} | {"pypi:pyinstaller"})
    for key in keys:
        kind, name = key.split(":", 1)
        props = [("ecr-kubelet:file", f) for f in files.get(key, [])]
        if kind == "deb":
            bom.components.add(deb_component(name, props))
            continue
        dist = all_dists[name]
        lic = PYINSTALLER_LICENSE if name == "pyinstaller" else python_license(dist)
        if name == "pyinstaller":
            props.append(("ecr-kubelet:role", "bootloader (one-dir) of the bundled program"))
        bom.components.add(component(dist.metadata["Name"], dist.version, lic,
                                     PackageURL("pypi", name=name, version=dist.version), props=props))
    # The launcher and what is linked into it statically.
    bom.components.add(component("ecr-kubelet-launcher", version, "Apache-2.0",
                                 PackageURL("generic", name="ecr-kubelet-launcher", version=version),
                                 props=[("ecr-kubelet:file", "(the binary's first part, packaging/launcher.c)")],
                                 description="static launcher: unpacks, verifies and execs the bundle"))
    for pkg in ("zlib1g-dev", "libmd-dev", "libc6-dev"):
        bom.components.add(deb_component(pkg, [("ecr-kubelet:linked-into", "ecr-kubelet-launcher (static)")]))

    bom.register_dependency(app, list(bom.components))
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        raise SystemExit(f"sbom: the document does not validate: {errors}")
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"sbom: {args.out}: {len(bom.components)} components, {sum(len(v) for v in files.values())} files traced",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
