"""The house shows its flow: depth2img/'s folders are the stages of the data flow, in order, and no import runs
back from a later stage into an earlier one; no import circle; no function longer than 80 lines.

Every import is walked (with ast, those inside functions included). A module's stage is its folder's.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "depth2img"

# The stages in the order of the flow (README "Layout"); one rank may hold several folders that never import
# each other's modules in a circle. A module may import modules of its own stage and of earlier ones.
STAGES = {
    "base": 0,
    "source": 1,
    "checkpoint": 2,
    "estimate": 3,
    "process": 4,
    "condition": 5,
    "export": 6,
    "schema": 7,
    "panel": 8,
    "webui": 9,
    "pipeline": 9,
    "sequences": 10,
    "standalone": 11,
    "": 12,  # depth2img/__init__.py and __main__.py: the package's entry
}

# Lazy (in-function) imports of depth2img modules that are allowed to point at a module that imports back,
# each with its reason. Empty: no circle is held together by a lazy import.
ALLOWED_CIRCLE_EDGES: dict[tuple[str, str], str] = {}

MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else ""


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported depth2img module, line, lazy) for every import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("depth2img") and name != module and name != "depth2img":
                found.append((name, node.lineno, id(node) not in top))
    return found


def _graph():
    modules = _modules()
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_folder_is_a_stage():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert set(folders) <= set(STAGES), f"folders without a stage in STAGES: {set(folders) - set(STAGES)}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside a stage folder: {loose}"


def test_no_import_runs_back_to_an_earlier_stage():
    _, graph = _graph()
    back = [
        f"{module} (stage {_stage(module) or 'entry'}) imports {target} (stage {_stage(target)}) at line {line}"
        for module, edges in graph.items()
        for target, line, _lazy in edges
        if STAGES[_stage(target)] > STAGES[_stage(module)]
    ]
    assert not back, "imports from a later stage into an earlier one:\n" + "\n".join(sorted(set(back)))


def test_no_import_circle():
    _, graph = _graph()
    edges = {
        m: sorted({t for t, _line, _lazy in targets if (m, t) not in ALLOWED_CIRCLE_EDGES})
        for m, targets in graph.items()
    }
    circles, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in edges.get(node, []):
            if state.get(target) == "open":
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_allowed_circle_edges_have_reasons():
    assert all(reason.strip() for reason in ALLOWED_CIRCLE_EDGES.values())


def _long_functions(paths):
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    yield f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)"


def test_no_function_over_80_lines():
    paths = [*sorted(PACKAGE.rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.py"))]
    long = list(_long_functions(paths))
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("stage", sorted(s for s in STAGES if s))
def test_stage_folder_says_what_it_holds(stage):
    init = PACKAGE / stage / "__init__.py"
    assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{stage}/__init__.py needs a docstring"
