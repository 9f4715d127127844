"""The modules form layers that point one way: each imports only modules below it, at the top of
the file (an import hidden in a function to dodge a circle means the layering is wrong)."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bottom first; a module may import the ones before it only
LAYERS = ["model", "ghost", "files", "config", "data", "cuda_graph", "utils", "grouped", "sweeps", "studies.stats", "studies.common",
          "studies.seeds", "studies.batch_size", "studies.shift", "studies.adabn", "benchmarks.speed",
          "benchmarks.gpu", "benchmarks.inference",
          "report", "run_notebook"]


def modules():
    """{module name: path} of every Python file outside tests/."""
    paths = glob.glob(os.path.join(ROOT, "*.py")) + glob.glob(os.path.join(ROOT, "studies", "*.py")) + \
        glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
    names = {os.path.relpath(p, ROOT)[:-3].replace(os.sep, "."): p for p in paths}
    return {name: path for name, path in names.items() if not name.endswith("__init__")}


def project_imports(path, project):
    """[(imported project module, line, at the top of the file)] of one file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(name, node.lineno, id(node) in top) for name in names if name in project]
    return found


def test_every_module_has_a_place_in_the_layers():
    assert sorted(modules()) == sorted(LAYERS), "add the new module to LAYERS, above what it imports"


def test_each_module_imports_only_modules_below_it_and_at_its_top():
    project = set(LAYERS)
    wrong = []
    for name, path in modules().items():
        for imported, line, at_top in project_imports(path, project):
            if LAYERS.index(imported) >= LAYERS.index(name):
                wrong.append(f"{name}:{line} imports {imported}, which is not below it")
            if not at_top:
                wrong.append(f"{name}:{line} imports {imported} inside a function or block")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", ["model.py", "ghost.py"])
def test_model_imports_torch_and_the_standard_library_only(name):
    import sys

    tree = ast.parse(open(os.path.join(ROOT, name), encoding="utf-8").read())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert roots - set(sys.stdlib_module_names) == {"torch"}
