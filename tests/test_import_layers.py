"""The import layers of docs/DEVELOPING.md ('Layers: what may import what'), checked on the source.

Every ``import`` / ``from ... import`` of the package, the tools and the benchmarks is read
with ``ast`` (imports inside functions included), so a lazy import cannot hide a broken layer.
"""

import ast
import os

import pytest

from conftest import REPO

DEMO_APP = "nass_demo"  # the demo application's package (nass_demo/ at the repository root)
DEMO_TOOLS = {"tools/build_demo_corpus.py", "tools/make_demo_page.py", "tools/run_demo.py", "bench/run_all.py"}


def module_name(rel):
    name = rel[:-3].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def imports_of(path, module):
    """The ``nass`` modules a file imports (absolute names; ``from nass import x`` gives ``nass.x``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    package = module.rsplit(".", 1)[0] if not path.endswith("__init__.py") else module
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {name for name in found if name in ("nass", DEMO_APP) or name.startswith(("nass.", DEMO_APP + "."))}


def python_files(*folders):
    for folder in folders:
        for dirpath, _, files in os.walk(os.path.join(REPO, folder)):
            for f in sorted(files):
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), REPO)
                    yield rel, module_name(rel)


def existing_modules():
    return {mod for _, mod in python_files("nass")}


def nass_imports():
    """``{module: {imported nass modules that exist}}`` (``from nass.x import name`` counts as nass.x)."""
    known = existing_modules()
    out = {}
    for rel, mod in python_files("nass"):
        out[mod] = {name for name in imports_of(os.path.join(REPO, rel), mod) if name in known}
    return out


def within(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# layer rules: module prefix -> the nass prefixes it may import (besides its own package)
RULES = {
    "nass.hparams": (),
    "nass.losses": ("nass.losses",),
    "nass.separation": ("nass.losses",),
    "nass.dataio": ("nass.dataio", "nass.separation"),
    "nass.brains": ("nass.hparams", "nass.losses", "nass.separation", "nass.dataio", "nass.correction", "nass.curves"),
}


@pytest.mark.parametrize("layer", sorted(RULES))
def test_each_layer_imports_only_the_layers_below(layer):
    allowed = RULES[layer] + (layer,)
    bad = {
        mod: sorted(name for name in names if not within(name, allowed) and name != "nass")
        for mod, names in nass_imports().items()
        if within(mod, (layer,))
    }
    bad = {mod: names for mod, names in bad.items() if names}
    assert not bad, f"{layer} may import only {allowed}; found {bad}"


def test_the_runner_sits_above_both_brains_and_nothing_imports_it():
    graph = nass_imports()
    assert {"nass.brains.separation", "nass.brains.correction"} <= graph["nass.runner"]
    users = sorted(mod for mod, names in graph.items() if "nass.runner" in names)
    assert users == ["nass.training"], users  # the alias kept for old imports
    assert not [mod for mod, names in graph.items() if "nass.training" in names]


def test_no_library_module_imports_the_demo_app():
    """nass/ never imports nass_demo (lazy imports included); of the tools and benchmarks only
    the demo tools do; the demo app itself is found and does import the library."""
    users = {mod: sorted(n for n in imports_of(os.path.join(REPO, rel), mod) if within(n, (DEMO_APP,)))
             for rel, mod in python_files("nass")}
    assert not {m: n for m, n in users.items() if n}, f"library modules importing {DEMO_APP}: {users}"
    outside = []
    for rel, mod in python_files("tools", "bench"):
        if rel not in DEMO_TOOLS and any(within(n, (DEMO_APP,)) for n in imports_of(os.path.join(REPO, rel), mod)):
            outside.append(rel)
    assert not outside, f"only the demo tools {sorted(DEMO_TOOLS)} may import {DEMO_APP}; also: {outside}"
    app = {mod: imports_of(os.path.join(REPO, rel), mod) for rel, mod in python_files(DEMO_APP)}
    assert {"nass_demo.corpus", "nass_demo.page"} <= set(app)
    assert any(within(n, ("nass",)) for names in app.values() for n in names)
    assert not os.path.exists(os.path.join(REPO, "nass", "demo_page.py"))
    assert not os.path.exists(os.path.join(REPO, "nass", "dataio", "demo_corpus.py"))


def test_the_demo_check_can_fail(tmp_path):
    """A library module with a lazy import of the demo app is seen."""
    pkg = tmp_path / "nass" / "dataio"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from nass_demo.page import main\n    import nass_demo.corpus\n")
    found = imports_of(str(pkg / "x.py"), "nass.dataio.x")
    assert {"nass_demo.page", "nass_demo.corpus"} <= found


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser finds an import inside a function and a relative import (so the rules can fail)."""
    pkg = tmp_path / "nass" / "losses"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from nass.brains.separation import SeparationBrain\nfrom . import pit\n")
    found = imports_of(str(pkg / "x.py"), "nass.losses.x")
    assert {"nass.brains.separation", "nass.losses.pit"} <= found
    assert not within("nass.brains.separation", RULES["nass.losses"] + ("nass.losses",))
