"""docs/architecture.md is the record of the layout: every module of the tree is named in it, in the section of its
package (and beside its subfolder), and every file the trace of one run names exists."""
from __future__ import annotations

import re

from conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"


def sections() -> dict[str, str]:
    """The doc's sections by heading line (##, ###)."""
    parts = re.split(r"^(#{2,3} .*)$", DOC.read_text(), flags=re.M)
    return {heading: body for heading, body in zip(parts[1::2], parts[2::2])}


def project_modules() -> list:
    packages = [path.parent for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests"]
    return sorted(path for package in packages for path in package.rglob("*.py") if path.name != "__init__.py")


def named_in_its_section(module, found: dict[str, str]) -> bool:
    """The module's name (with or without .py) on a line of a section whose heading names its package, beside its
    subfolder's name when it lies in one."""
    relative = module.relative_to(ROOT)
    package, subfolders = relative.parts[0], relative.parts[1:-1]
    bodies = [body for heading, body in found.items() if f"`{package}/`" in heading or f"{package}/" in heading]
    for body in bodies:
        for line in body.splitlines():
            if re.search(rf"\b{re.escape(module.stem)}\b", line) and all(f"{sub}/" in line for sub in subfolders):
                return True
    return False


def test_every_module_is_in_the_architecture_doc():
    found = sections()
    missing = [str(module.relative_to(ROOT)) for module in project_modules() if not named_in_its_section(module, found)]
    assert missing == [], f"not in docs/architecture.md (in its package's section): {missing}"


def test_the_traced_run_names_files_that_exist():
    trace = next(body for heading, body in sections().items() if heading.startswith("### One run, file by file"))
    named = set(re.findall(r"`((?:compare|[a-z_]+/[a-z_/]+)\.py)`", trace))
    assert len(named) >= 15, named
    assert [name for name in sorted(named) if not (ROOT / name).is_file()] == []
