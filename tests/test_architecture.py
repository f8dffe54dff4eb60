"""The package's imports run one way (function-local imports included).

Every ``import`` / ``from ... import`` anywhere in a module (at the top, inside functions, under
``if TYPE_CHECKING``) is an edge to the most specific module it names. The test fails on a cycle
between files, on a cycle between sub-packages, and on an import from a lower layer to a higher
one, so the layout stays readable as data in -> features -> models -> orchestration -> commands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "deconfoundlm"
PKG = "deconfoundlm"

# Lowest first. A module may import from its own layer's unit or from any lower one.
LAYERS = [
    ("errors", "checks", "progress", "options", "configs"),  # foundation: the error type, option checks and
    # typed configs, what the terminal shows
    ("logs",),  # tables, column roles, values, validation, the bundled Upworthy data
    ("outputs", "lifecycle"),  # the output-safety rule and atomic writers; SIGTERM removes partial outputs
    ("features",),  # encoders and text models, the confounder design
    ("glm",),  # families, the additive GLM, the penalty path, CV, the sandwich
    ("rewards",),  # one estimator per method, artifacts, fine-tuning, diagnostics numerics
    ("distributed",),  # the same solver over blocks held by a Dask cluster
    ("logdata", "pipeline"),  # LogData (a log bound to its roles); Reward, fit_reward, load_reward, score_file
    ("alignment",),  # generators, best-of-K / DPO / GRPO against a reward
    ("evaluation",),  # diagnose, sensitivity, demo, report, benchmark
    ("serving",),  # the reward as an HTTP service, and its client for RL trainers
    ("cli", "__main__"),  # commands
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = (PKG, *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                # ``from pkg import sub`` names the submodule when there is one, else the package.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith(PKG) and target != name:
                    edges[name].add(target)
    return edges


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""  # "" is the root package (the public facade)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


EDGES = _edges(_modules())


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in EDGES} - {""}
    assert units <= set(RANK), f"new top-level module(s) without a layer: {sorted(units - set(RANK))}"


def test_no_import_cycle_between_files():
    cycle = _cycle(EDGES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_subpackages():
    graph: dict[str, set[str]] = {}
    for a, targets in EDGES.items():
        for b in targets:
            if _unit(a) != _unit(b) and _unit(b):
                graph.setdefault(_unit(a), set()).add(_unit(b))
    cycle = _cycle(graph)
    assert cycle is None, "sub-package cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(m for m in EDGES if _unit(m)))
def test_imports_point_down_the_layers(module):
    upward = sorted(t for t in EDGES[module] if RANK.get(_unit(t), -1) > RANK[_unit(module)])
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_only_the_commands_import_the_root_facade():
    users = sorted(m for m, targets in EDGES.items() if PKG in targets and _unit(m) not in ("cli", "__main__"))
    assert not users, f"modules importing the package root (import from the defining module): {users}"


def test_the_checker_sees_function_local_imports(tmp_path):
    """The checker itself: a lazy import inside a function is an edge, and a cycle is found."""
    (tmp_path / "a.py").write_text("def f():\n    from deconfoundlm.b import g\n")
    (tmp_path / "b.py").write_text("from deconfoundlm.a import f\n")
    mods = {"deconfoundlm.a": tmp_path / "a.py", "deconfoundlm.b": tmp_path / "b.py"}
    edges = _edges(mods)
    assert edges == {"deconfoundlm.a": {"deconfoundlm.b"}, "deconfoundlm.b": {"deconfoundlm.a"}}
    assert _cycle(edges) is not None
