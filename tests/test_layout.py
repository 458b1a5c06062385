"""The package's layout: its rooms import downwards only, no file imports itself round a
circle, and every file is short enough to read in one sitting.

Rooms, lowest first (a module may import its own room or a lower one):

    0  backend, xp_strict            which array module; the CuPy stand-in
    1  core/                         the plain core: each equation once
    2  fast/, gpu/                   the speed layers, tested equal to the core
    3  kernels                       which of them a layer calls
    4  the shell, and data/          module, model, spiking, containers, models, optim,
                                     encode, gradcheck; data sets
    5  recipe                        a run's options, data and network
    6  checkpoint                    .npz files
    7  diagnostics/                  statistics and figures
    8  interop/                      PyTorch and NIR
    9  files                         dn.load: every format
    10 train/                        the training command
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dsatgo_np")

ROOMS = [("backend", 0), ("xp_strict", 0), ("core", 1), ("fast", 2), ("gpu", 2),
         ("kernels", 3), ("module", 4), ("model", 4), ("spiking", 4), ("containers", 4),
         ("models", 4), ("optim", 4), ("encode", 4), ("gradcheck", 4), ("data", 4),
         ("recipe", 5), ("checkpoint", 6), ("diagnostics", 7), ("interop", 8), ("files", 9),
         ("train", 10)]


def modules() -> dict:
    """{dotted name: path} of every module of the package but its face (__init__.py)."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = \
                    os.path.join(folder, name)
    del found["dsatgo_np"]
    return found


def imports(name: str, path: str, known: set) -> set:
    """The package's modules that this one imports, anywhere in the file (lazy imports too)."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("dsatgo_np")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if not base.startswith("dsatgo_np"):
                continue
            for a in node.names:                   # from X import y: the submodule X.y if any
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m != name}


def room(name: str) -> int:
    top = name.split(".")[1]
    rank = dict(ROOMS).get(top)
    assert rank is not None, f"{name} is in no room: add it to ROOMS"
    return rank


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def test_every_room_imports_its_own_or_a_lower_one():
    upward = [f"{a} ({room(a)}) -> {b} ({room(b)})" for a, targets in GRAPH.items()
              for b in targets if b != "dsatgo_np" and room(b) > room(a)]
    assert not upward, upward
    into_face = [a for a, targets in GRAPH.items() if "dsatgo_np" in targets]
    assert not into_face, f"modules that import the package's face: {into_face}"


def test_no_module_imports_itself_round_a_circle():
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"
    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, cycles


def test_the_core_imports_nothing_but_the_backend():
    for name, targets in GRAPH.items():
        if name.startswith("dsatgo_np.core"):
            assert {t.split(".")[1] for t in targets} <= {"core", "backend"}, (name, targets)


@pytest.mark.parametrize("name", sorted(modules()))
def test_a_file_is_one_idea_in_at_most_400_lines_and_a_short_docstring(name):
    path = modules()[name]
    source = open(path).read()
    doc = ast.get_docstring(ast.parse(source), clean=False) or ""
    assert len(source.splitlines()) <= 400, f"{path}: {len(source.splitlines())} lines"
    assert 0 < len(doc.splitlines()) <= 12, f"{path}: a docstring of {len(doc.splitlines())} lines"


def test_the_checker_finds_an_upward_import_and_a_circle():
    """The graph checks themselves, on made-up modules: they must fail where they should."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {"dsatgo_np.core.neuron": {"dsatgo_np.train.loop"}}
        with pytest.raises(AssertionError):
            test_every_room_imports_its_own_or_a_lower_one()
        GRAPH = {"dsatgo_np.model": {"dsatgo_np.models"}, "dsatgo_np.models": {"dsatgo_np.model"}}
        with pytest.raises(AssertionError):
            test_no_module_imports_itself_round_a_circle()
    finally:
        GRAPH = saved
