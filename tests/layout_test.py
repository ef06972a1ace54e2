"""The house rules of the package: concept packages, imports downward only, no circles,
public names that stay, old module names that still import (with a warning)."""

import ast
import os
import subprocess
import sys
import unittest

import r2u

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "r2u")
# A module may import its own package, and packages of a lower rank only.
RANKS = {"base": 0, "nn": 1, "data": 1, "inference": 2, "evaluation": 3, "training": 4,
         "bench": 5, "cli": 6}
BASE = ("config", "errors", "files", "figures", "devices")

PUBLIC = ["DataConfig", "Experiment", "ModelConfig", "Preprocessing", "R2UNetLayer",
          "TrainConfig", "UNet", "build", "evaluate", "load_data", "load_model",
          "prepare", "preset", "train"]


def _modules():
    """{dotted name: path} of every module of r2u."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3]
                dotted = rel.replace(os.sep, ".").removesuffix(".__init__")
                found[dotted] = os.path.join(folder, name)
    return found


def _imports(path, modules):
    """The r2u modules `path` imports (at any depth of its code)."""
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in modules and m != "r2u"}


def _group(module):
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in BASE:
        return "base"
    return parts[1]


class LayoutTest(unittest.TestCase):

    def test_few_modules_directly_under_r2u(self):
        top = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
        self.assertLessEqual(len(top), 10, top)

    def test_imports_run_downward(self):
        modules = _modules()
        wrong = []
        for module, path in modules.items():
            if module == "r2u":
                continue
            for target in _imports(path, modules):
                here, there = _group(module), _group(target)
                if here != there and RANKS[there] >= RANKS[here]:
                    wrong.append(f"{module} imports {target}")
        self.assertEqual(wrong, [])

    def test_no_import_circles(self):
        modules = _modules()
        graph = {m: _imports(p, modules) for m, p in modules.items() if m != "r2u"}
        state, cycles = {}, []

        def visit(node, stack):
            state[node] = "open"
            for nxt in sorted(graph.get(node, ())):
                if state.get(nxt) == "open":
                    cycles.append(stack[stack.index(nxt):] + [nxt])
                elif nxt not in state:
                    visit(nxt, stack + [nxt])
            state[node] = "done"

        for node in sorted(graph):
            if node not in state:
                visit(node, [node])
        self.assertEqual(cycles, [])

    def test_public_names(self):
        self.assertEqual(sorted(r2u.__all__), PUBLIC)
        # A new process: importing r2u imports no TensorFlow, each name resolves.
        code = ("import sys, r2u; assert 'tensorflow' not in sys.modules; "
                "import importlib; [getattr(r2u, n) for n in r2u.__all__ if n != "
                "'R2UNetLayer']; print(r2u.build.__module__, r2u.train.__module__)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, cwd=ROOT, check=True).stdout
        self.assertEqual(out.split(), ["r2u.nn.models", "r2u.training.loop"])

    def test_old_module_names_import_with_one_warning(self):
        code = ("import warnings; warnings.simplefilter('always'); "
                "import r2u\n"
                "with warnings.catch_warnings(record=True) as w:\n"
                "    warnings.simplefilter('always')\n"
                "    from r2u import models\n"
                "    from r2u.models import build\n"
                "    import r2u.checkpoints\n"
                "    from r2u import models as again\n"
                "print(build is r2u.nn.models.build, r2u.checkpoints.load is "
                "r2u.inference.loading.load, len([x for x in w if issubclass("
                "x.category, FutureWarning)]))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, cwd=ROOT, check=True).stdout
        self.assertEqual(out.split(), ["True", "True", "2"])

    def test_every_moved_name_has_a_module(self):
        modules = _modules()
        for old, new in r2u.MOVED.items():
            self.assertIn(new, modules, old)
            self.assertNotIn(f"r2u.{old}", modules)


if __name__ == "__main__":
    unittest.main()
