"""The layering of docs/architecture.md, read from the source (AST): no import cycle, the library
never imports an app, the hub never imports a network, and no import hides inside a function
except the few listed below, each kept for start-up speed (tests/test_cli_startup.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("maestro", "shards", "pretrain", "finetune", "predict", "gapfill")
APPS = ("pretrain", "finetune", "predict", "gapfill")
MODEL_MODULES = (
    "maestro.models.encoder",
    "maestro.models.mae",
    "maestro.models.segmenter",
    "maestro.models.baseline.model",
    "maestro.models.flair2.segmenter",
    "maestro.models.flair2.unet",
    "maestro.models.flair2.utt",
    "maestro.models.heads",
    "maestro.models.zoo",
)
"""Networks (and the module that imports them all): what ``maestro.hub`` must never import."""

DEFERRED = {
    # module -> {imported module: why it waits until a function runs}
    "maestro.cli": {
        "maestro.models.zoo": "maestro --help and bad flags answer before torch: publish loads every network",
        "maestro.hub.remote": "maestro --help answers before huggingface_hub and torch load",
        "maestro.reference.cli": "import-reference is optional: its parser is added when the package is there",
    },
    "maestro.reference.cli": {
        "maestro.reference.convert": "import-reference checks its flags before the converter loads torch",
    },
    "shards.cli": {
        "maestro.data.zoo": "shards --help before rasterio: the toy writers of every dataset",
        "maestro.data.toy.zone": "shards --help before rasterio: the toy zone writer",
        "maestro.data.dates_csv": "shards --help before the GeoPackage writer",
        "shards.writer": "shards build checks its configs before the writer loads webdataset and torch",
        "shards.verify": "shards verify: its readers load webdataset and torch",
        "shards.stats": "shards stats refuses a missing manifest before its readers load",
        "shards.fill": "shards fill refuses a missing manifest and bad options before the network and the writer load torch",
    },
    "maestro.training.cli": {
        "maestro.training.fp8": "only an FP8 run's hardware check loads torch: --help and config errors never do",
    },
    "pretrain.cli": {
        "pretrain": "from pretrain import stage: the run (torch, Lightning) once the config is checked",
        "pretrain.stage": "pretrain --help and config errors before torch and Lightning load",
    },
    "finetune.cli": {
        "finetune": "from finetune import stage: the run (torch, Lightning) once the config is checked",
        "finetune.stage": "finetune --help and config errors before torch and Lightning load",
    },
    "predict.cli": {
        "predict.engine": "predict checks flags and paths before torch and rasterio's mapping load",
        "predict.model": "predict checks flags and paths before torch and the network load",
        "predict.run": "predict checks flags and paths before torch and the driver (engine, loader) load",
        "predict.reconstruct": "predict --reconstruct checks flags and paths before torch and the network load",
    },
    "gapfill.cli": {
        "gapfill": "from gapfill import stage: the run (torch, Lightning) once the config is checked",
        "gapfill.stage": "gapfill --help and config errors before torch and Lightning load",
    },
}
"""Function-level imports of product modules kept on purpose: every one makes a command answer
``--help`` or a user error before torch, Lightning or timm load. Anything else is imported at the top."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[_module_name(path)] = path
    return modules


MODULES = product_modules()


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module name of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """Product modules an import statement loads (``from pkg import sub``: the submodule)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    base = _resolve(module, node, MODULES[module].name == "__init__.py")
    if base in MODULES:
        yield base
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            yield f"{base}.{alias.name}"


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> Iterator[tuple[str, bool, int]]:
    """(imported product module, inside a function, line) of every import of ``module``
    (imports under ``if TYPE_CHECKING:`` never run and are left out)."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(module, child):
                    yield target, in_function, child.lineno
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inner)

    yield from walk(tree, False)


IMPORTS = {module: list(_imports(module)) for module in MODULES}


def _graph() -> dict[str, set[str]]:
    """Every import edge (top-level and inside functions: both run); a package's ``__init__`` is
    one more module."""
    return {module: {target for target, _, _ in IMPORTS[module] if target != module} for module in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_imports_of_every_kind():
    """The checks below are only as good as the walk: a top-level, a relative-free submodule
    ``from pkg import sub`` and a function-level import are all found."""
    assert len(MODULES) > 140
    found = {target for target, _, _ in IMPORTS["maestro.hub.folder"]}
    assert "maestro.errors" in found
    cycle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(cycle) == [["a", "b", "c"]]
    assert any(inside for _, inside, _ in IMPORTS["maestro.cli"])


def test_no_import_cycle():
    cycles = strongly_connected(_graph())
    assert not cycles, f"import cycles among product modules: {cycles}"


def test_the_library_imports_no_app():
    bad = [
        f"{module}:{line} imports {target}"
        for module, imports in IMPORTS.items()
        if module.split(".")[0] == "maestro"
        for target, _, line in imports
        if target.split(".")[0] in APPS
    ]
    assert not bad, bad


def test_only_the_shards_command_line_imports_shards_fill():
    """``shards fill`` restores series with a cloud-removal network (``maestro.api_gapfill``): it sits
    above the library, beside the apps, though it lives in ``shards/``."""
    importers = sorted(
        module
        for module, imports in IMPORTS.items()
        for target, _, _ in imports
        if target == "shards.fill" and module != "shards.fill"
    )
    assert importers == ["shards.cli"], importers


def test_the_hub_imports_no_network():
    bad = [
        f"{module}:{line} imports {target}"
        for module, imports in IMPORTS.items()
        if module == "maestro.hub" or module.startswith("maestro.hub.")
        for target, _, line in imports
        if any(target == m or target.startswith(m + ".") for m in MODEL_MODULES)
    ]
    assert not bad, bad


def test_imports_inside_functions_are_only_the_listed_deferrals():
    found: dict[str, dict[str, int]] = {}
    for module, imports in IMPORTS.items():
        for target, inside, line in imports:
            if inside and target != module:
                found.setdefault(module, {}).setdefault(target, line)
    unlisted = sorted(
        f"{module}:{line} imports {target}"
        for module, targets in found.items()
        for target, line in targets.items()
        if target not in DEFERRED.get(module, {})
    )
    stale = sorted(
        f"{module} -> {target}"
        for module, targets in DEFERRED.items()
        for target in targets
        if target not in found.get(module, {})
    )
    assert not unlisted, (
        "imports inside functions (move them to the top, or list them with a reason):\n" + "\n".join(unlisted)
    )
    assert not stale, f"listed deferrals that no longer exist: {stale}"
