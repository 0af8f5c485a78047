"""The house rules of the package, checked on its source (docs/architecture.md draws them):

- every room imports only its own modules and the rooms below it, and never a room beside it
  (the agent and the endpoint know nothing of each other): data flows one way;
- the module import graph has no circle, counting imports inside functions too;
- no module reaches another module's private names (``_name``);
- no module is longer than 600 lines.

The checkers are plain functions of parsed source, so each is also tested on a small example
that breaks its rule: a rule that cannot fail checks nothing.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgetelemetry"
MAX_LINES = 600

# Lowest first.  A room may import the rooms on the lines above its own; rooms on the same line
# are beside each other and import neither each other nor anything of a line below.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"_version", "errors", "_fs"}),  # facts and helpers everything may use
    frozenset({"_native"}),  # the C core and the fast path, behind the binding
    frozenset({"snapshot"}),  # the unit passed between stages
    frozenset({"recording"}),  # the API an inference loop calls; makes snapshots
    frozenset({"heartbeat", "otlp"}),  # snapshots -> requests (pure): SendHeartbeat | OTLP
    frozenset({"agent", "server"}),  # the device's delivery | the fleet's endpoint
    frozenset({"demo"}),  # the main job: both sides on loopback
    frozenset({"bench"}),  # what telemetry costs (public names only)
    frozenset({"cli"}),  # the edgetelemetry command
    frozenset({"__main__", "__init__"}),  # python -m edgetelemetry; the package's face
)

# The namedtuple API is public despite its underscore.  One dependency's private method is used
# on purpose: botocore's own timestamp conversion, so a request's size is measured as the
# installed botocore writes it (its wire form changed between releases); test_heartbeat_split
# pins the sizes against botocore's real serializer.
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make",
                               "_convert_timestamp_to_str"})


@dataclass
class Module:
    name: str  # dotted, e.g. edgetelemetry.agent.spool
    path: Path
    is_package: bool
    tree: ast.Module
    stub: bool = False  # a .pyi of a compiled module
    imports: set[str] = field(default_factory=set)  # dotted modules of edgetelemetry


def room(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def rank(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"room {name!r} is in no layer of LAYERS: add it where it belongs")


def load(package: Path = PACKAGE, top: str = "edgetelemetry") -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted(package.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package).with_suffix("")
        parts = [top, *rel.parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        name = ".".join(parts)
        if path.suffix == ".pyi" and name in modules:
            continue
        tree = ast.parse(path.read_text(), str(path))
        modules[name] = Module(name, path, is_package, tree, stub=path.suffix == ".pyi")
    for module in modules.values():
        module.imports = set(_imports(module, modules))
    return modules


def _base(module: Module, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts + ([target] if target else []))


def _imports(module: Module, modules: Mapping[str, Module]) -> Iterator[str]:
    top = module.name.split(".")[0]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node.level, node.module)
            if base.split(".")[0] != top:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in modules else base


def layering_problems(modules: Mapping[str, Module]) -> list[str]:
    problems = []
    for module in modules.values():
        mine = room(module.name)
        for target in sorted(module.imports):
            theirs = room(target)
            if theirs == mine:
                continue
            if rank(theirs) >= rank(mine):
                where = "beside" if rank(theirs) == rank(mine) else "above"
                problems.append(f"{module.name} imports {target}: room {theirs!r} is {where} "
                                f"room {mine!r}")
    return problems


def cycles(modules: Mapping[str, Module]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each as a list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].imports):
            if w not in modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in modules[v].imports:
                found.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__") and name not in PUBLIC_UNDERSCORE


def _defined(tree: ast.AST) -> set[str]:
    """The names a module defines: functions, classes, assigned names and attributes,
    annotated class attributes, ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            for const in ast.walk(node.value):
                if isinstance(const, ast.Constant) and isinstance(const.value, str):
                    names.add(const.value)
    return names


def private_problems(modules: Mapping[str, Module]) -> list[str]:
    problems = []
    for module in modules.values():
        if module.stub:
            continue
        package = module.name if module.is_package else module.name.rsplit(".", 1)[0]
        # a compiled module's stub declares names its own package's wrapper may use
        friends = set().union(*(
            _defined(m.tree) for m in modules.values()
            if m.stub and m.name.rsplit(".", 1)[0] == package
        ))
        own = _defined(module.tree) | friends
        aliases: dict[str, str] = {}  # local name -> edgetelemetry module
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                base = _base(module, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if sub in modules:
                        aliases[alias.asname or alias.name] = sub
                    elif base in modules and _private(alias.name):
                        problems.append(f"{module.name} imports {alias.name} from {base}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            target = node.value
            if isinstance(target, ast.Name) and target.id in ("self", "cls"):
                continue
            if isinstance(target, ast.Name) and target.id in aliases:
                other = aliases[target.id]
                if f"{other}.{node.attr}" in modules or node.attr in friends:
                    continue
                problems.append(f"{module.name} uses {target.id}.{node.attr} of {other}")
            elif node.attr not in own:
                problems.append(f"{module.name}:{node.lineno} uses .{node.attr}, which it "
                                "does not define")
    return sorted(problems)


def size_problems(package: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".pyi", ".c", ".h") and "__pycache__" not in path.parts:
            lines = len(path.read_text().splitlines())
            if lines > limit:
                problems.append(f"{path.relative_to(package.parent)}: {lines} lines")
    return problems


# -- the package ---------------------------------------------------------------------------------

MODULES = load()


def test_every_room_is_in_a_layer() -> None:
    for name in MODULES:
        rank(room(name))


def test_imports_flow_one_way() -> None:
    assert layering_problems(MODULES) == []


def test_the_import_graph_has_no_circle() -> None:
    assert cycles(MODULES) == []


def test_no_module_reaches_another_modules_private_names() -> None:
    assert private_problems(MODULES) == []


def test_no_module_is_over_600_lines() -> None:
    assert size_problems() == []


def test_the_graph_sees_imports_inside_functions() -> None:
    # the circle the server once had was a function-level import: it must count
    cli = MODULES["edgetelemetry.cli"]
    assert "edgetelemetry.server.cli" in cli.imports


# -- the checkers fail where they should -----------------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Module]:
    pkg = tmp_path / "edgetelemetry"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for directory in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return load(pkg)


def test_an_upward_import_is_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "snapshot.py": "from .recording.recorder import Recorder\n",
        "recording/recorder.py": "from ..snapshot import Snapshot\n",
    })
    assert layering_problems(modules) == [
        "edgetelemetry.snapshot imports edgetelemetry.recording.recorder: room 'recording' is "
        "above room 'snapshot'"
    ]


def test_an_import_beside_is_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "agent/agent.py": "def f():\n    from ..server.store import Store\n",
        "server/store.py": "",
    })
    assert [p.split(":")[1] for p in layering_problems(modules)] == [
        " room 'server' is beside room 'agent'"
    ]


def test_a_circle_is_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "server/fleet.py": "def parser():\n    from .cli import DEFAULT_STORE\n",
        "server/cli.py": "from .app import serve\n",
        "server/app.py": "from .fleet import DEFAULT_OFFLINE_AFTER\n",
    })
    assert cycles(modules) == [
        ["edgetelemetry.server.app", "edgetelemetry.server.cli", "edgetelemetry.server.fleet"]
    ]


def test_a_reach_into_private_names_is_found(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "recording/recorder.py": "def _boot_id():\n    return ''\n",
        "agent/agent.py": """\
            from ..recording.recorder import _boot_id
            from ..recording import recorder

            def drain(rec):
                rec._core.collect()
                return recorder._boot_id()
        """,
    })
    assert private_problems(modules) == [
        "edgetelemetry.agent.agent imports _boot_id from edgetelemetry.recording.recorder",
        "edgetelemetry.agent.agent uses recorder._boot_id of edgetelemetry.recording.recorder",
        "edgetelemetry.agent.agent:5 uses ._core, which it does not define",
    ]


def test_own_and_self_private_names_are_fine(tmp_path: Path) -> None:
    modules = _tree(tmp_path, {
        "recording/recorder.py": """\
            class Handle:
                __slots__ = ("_recorder",)

            class Recorder:
                def __init__(self):
                    self._lock = None

                def handle(self):
                    h = Handle()
                    h._recorder = self
                    return h._recorder
        """,
    })
    assert private_problems(modules) == []


def test_a_long_module_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "edgetelemetry"
    pkg.mkdir()
    (pkg / "short.py").write_text("x = 1\n" * 10)
    (pkg / "long.py").write_text("x = 1\n" * 11)
    assert size_problems(pkg, limit=10) == ["edgetelemetry/long.py: 11 lines"]


@pytest.mark.parametrize("name", ["agent", "server", "recording", "heartbeat", "_native"])
def test_each_room_is_a_folder(name: str) -> None:
    assert (PACKAGE / name / "__init__.py").is_file()
