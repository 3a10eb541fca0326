"""pyscript.toml and index.html: pinned to vendor/, every Python file and shader mapped."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import pyscript_files  # noqa: E402
import vendor  # noqa: E402

CONFIG = tomllib.loads((ROOT / "pyscript.toml").read_text(encoding="utf-8"))


def test_every_python_file_and_shader_is_mapped():
    files = CONFIG["files"]
    on_disk = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("py/**/*.py")
               if "__pycache__" not in p.parts}
    on_disk |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob("shaders/*.wgsl")}
    assert on_disk, "found no py/**/*.py at all"
    mapped = {source.removeprefix("./") for source in files}
    missing = sorted(on_disk - mapped)
    assert not missing, f"not in pyscript.toml [files] (run python3 tools/pyscript_files.py): {missing}"
    stale = sorted(mapped - on_disk)
    assert not stale, f"pyscript.toml [files] maps files that do not exist: {stale}"
    for source, target in files.items():
        assert source == target, f"{source} must keep its path in the page's file system"


def test_files_table_is_exactly_what_the_generator_writes():
    text = (ROOT / "pyscript.toml").read_text(encoding="utf-8")
    assert pyscript_files.render(text, pyscript_files.wanted_files()) == text


def test_generator_replaces_only_the_files_table():
    head = 'name = "x"\npackages = ["numpy"]\n'
    once = pyscript_files.render(head, ["py/a.py"])
    twice = pyscript_files.render(once, ["py/a.py", "py/b.py"])
    assert tomllib.loads(twice) == {"name": "x", "packages": ["numpy"],
                                    "files": {"./py/a.py": "./py/a.py", "./py/b.py": "./py/b.py"}}


def test_interpreter_and_packages_come_from_vendor():
    assert CONFIG["interpreter"] == "./vendor/pyodide/pyodide.mjs"
    lock = json.loads((ROOT / "vendor" / "pyodide" / "pyodide-lock.json").read_text())
    assert lock["info"]["version"] == vendor.PYODIDE_VERSION
    for package in CONFIG["packages"]:
        assert package in vendor.PYODIDE_PACKAGES, f"{package} is not vendored by tools/vendor.py"
        assert package in lock["packages"]
    # PyScript installs packages through micropip, which needs packaging.
    assert {"micropip", "packaging"} <= set(vendor.PYODIDE_PACKAGES)


def test_page_names_no_other_origin():
    """Nothing the page loads names another host (plain <a href> links to read are fine);
    tests/e2e checks the requests themselves."""
    for name in ("index.html", "pyscript.toml", "web/shell.js", "web/app.css"):
        text = (ROOT / name).read_text(encoding="utf-8")
        text = re.sub(r"<a\s[^>]*>", "", text)
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    html = (ROOT / "index.html").read_text(encoding="utf-8")
    # issue 16: web/shell.js starts PyScript once the loading screen is painted
    assert "<script type=\"module\" src=" not in html
    assert 'script.src = "./vendor/pyscript/core.js";' in (ROOT / "web" / "shell.js").read_text(encoding="utf-8")
    assert 'config="./pyscript.toml"' in html
    assert "worker" not in re.search(r'<script type="py"[^>]*>', html).group(0)
