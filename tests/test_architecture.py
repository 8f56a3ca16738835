"""The house rules of docs/architecture.md that a change can break without any other test noticing:
stages never import each other, no import circle anywhere in the package, no stage module imported
by a string, no module grows past 600 lines, and nothing points at notes outside the repository."""

from __future__ import annotations

import ast
from pathlib import Path

import persyn
from persyn.stages import STAGES

SRC = Path(persyn.__file__).parent
STAGES_DIR = SRC / "stages"
REPO = SRC.parent.parent

#: Stage modules: every registered stage, and ingest (the stage run when a run opens). Every other
#: module in stages/ is the run context or a helper that several stages share.
STAGE_MODULES = {m.__name__.rpartition(".")[2] for m in STAGES.values()} | {"ingest"}


def stages_imported(path: Path) -> set[str]:
    """The modules of persyn.stages that a file imports, at any depth (function-level imports too),
    in any spelling: `import persyn.stages.x`, `from persyn.stages.x import ...`,
    `from persyn.stages import x`, relative imports."""
    package = {p.stem for p in STAGES_DIR.glob("*.py")} - {"__init__"}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against persyn.stages (the only package here)
                base = "persyn.stages" + (f".{node.module}" if node.module else "")
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["persyn", "stages"] and len(parts) > 2 and parts[2] in package:
                out.add(parts[2])
    return out


def test_the_import_scan_sees_every_spelling(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import persyn.stages.route\n"
        "from persyn.stages.score import Scores\n"
        "from persyn.stages import export, STAGES\n"
        "from . import report\n"
        "def f():\n"
        "    from persyn.stages.costs import ledger\n"
    )
    assert stages_imported(src) == {"route", "score", "export", "report", "costs"}


def test_no_stage_module_imports_another_stage():
    found = {p.stem for p in STAGES_DIR.glob("*.py")}
    assert STAGE_MODULES <= found, "a registered stage has no module in stages/"
    bad = {}
    for path in sorted(STAGES_DIR.glob("*.py")):
        if path.stem == "__init__":
            continue
        stages = stages_imported(path) & STAGE_MODULES - {path.stem}
        if stages:
            bad[path.name] = sorted(stages)
    # A helper that imported a stage would let two stages reach each other through it.
    assert not bad, f"stages/ modules importing stage modules (ask ctx.result(...) instead): {bad}"


def test_only_the_layers_above_the_stages_import_them():
    """The command line, the pipeline and the plan call into stage modules; the libraries below
    the stages (scoring, router, assignment, dataset, engines, ...) know nothing of runs."""
    above = {SRC / "pipeline.py", SRC / "plan.py"}
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.parent in (STAGES_DIR, SRC / "cli") or path in above:
            continue
        stages = stages_imported(path) & STAGE_MODULES
        if stages:
            bad[str(path.relative_to(SRC))] = sorted(stages)
    assert not bad, bad


def test_largest_module_is_under_600_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in SRC.rglob("*.py")}
    big = {name: n for name, n in sizes.items() if n >= 600}
    assert not big, f"split these modules (one idea each): {big}"


#: A function longer than this carries its reason in a `# long: ...` comment on the line above it.
MAX_FUNCTION_LINES = 80


def long_functions(path: Path) -> list[str]:
    """Functions (methods, nested ones too) over MAX_FUNCTION_LINES lines without a `# long:` reason
    on the line above their first decorator or `def`."""
    text = path.read_text()
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            above = lines[first - 2].strip() if first >= 2 else ""
            if n > MAX_FUNCTION_LINES and not above.startswith("# long:"):
                out.append(f"{node.name} ({n} lines, line {node.lineno})")
    return out


def test_the_long_function_scan_sees_one_without_a_reason(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    src = tmp_path / "m.py"
    src.write_text(
        f"def short():\n    pass\n\n\ndef long():\n{body}\n\n# long: a reason\ndef excused():\n{body}"
    )
    assert long_functions(src) == [f"long ({MAX_FUNCTION_LINES + 1} lines, line 5)"]


def test_no_function_over_80_lines_without_a_reason():
    bad = {str(p.relative_to(SRC)): f for p in sorted(SRC.rglob("*.py")) if (f := long_functions(p))}
    assert not bad, f"split these functions, or write `# long: <why>` above them: {bad}"


def test_no_reference_to_notes_outside_the_repository():
    """The method's equations and the model notes live in docs/ (method.md, models.md); the paper
    is cited as arXiv 2510.10925. Names built here so that this file does not match itself."""
    outside = ["PAPER" + ".md", "MODELS" + ".md", "DESIGN" + ".md", "../" + "shared"]
    files = [REPO / "README.md"]
    for folder in ("src", "docs", "benchmarks", "tests"):
        files += [
            p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".md", ".j2", ".yaml", ".toml"}
        ]
    hits = [
        f"{p.relative_to(REPO)}: {name}"
        for p in files
        if p.is_file() and p.resolve() != Path(__file__).resolve()
        for name in outside
        if name in p.read_text(errors="replace")
    ]
    assert not hits, hits


# ----------------------------------------------------------------------------- import circles


def import_graph(root: Path, top: str = "persyn") -> dict[str, set[str]]:
    """Module -> the modules of the package at `root` (named `top`) it imports, at any depth
    (function-level imports too: a circle closed inside a function is still a circle)."""
    mods = {}
    for p in root.rglob("*.py"):
        parts = [top, *p.relative_to(root).with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = anchor + (f".{node.module}" if node.module else "")
                # `from pkg import mod` imports the module `pkg.mod`; `from mod import name`, `mod`.
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            edges |= {r for r in map(resolve, names) if r and r != mod and r.split(".")[0] == top}
        graph[mod] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_scan_sees_a_circle_closed_inside_a_function(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "page.py").write_text("from pkg.sub.figures import plot\n")
    (tmp_path / "sub" / "figures.py").write_text("def plot():\n    from ..page import helper\n")
    (tmp_path / "leaf.py").write_text("from pkg import page\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.leaf"] == {"pkg.page"}
    assert circles(graph) == [["pkg.page", "pkg.sub.figures"]]


def test_no_import_circle():
    found = circles(import_graph(SRC))
    assert not found, f"import circles (move the shared part into a module both import): {found}"


# ----------------------------------------------------------------------------- string imports

_IMPORTERS = {"import_module", "__import__", "lazy_exports"}


def string_imports_of_stages(path: Path) -> list[str]:
    """Stage modules a file imports by a string: `importlib.import_module("persyn.stages.x")`,
    `__import__`, a lazy export of one, or any dynamic name under persyn.stages (an f-string), which
    the import scans above could not see."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func not in _IMPORTERS:
            continue
        for arg in ast.walk(ast.Module(body=[ast.Expr(a) for a in node.args], type_ignores=[])):
            if isinstance(arg, ast.JoinedStr) and any(
                isinstance(v, ast.Constant) and "persyn.stages." in str(v.value) for v in arg.values
            ):
                hits.append(f"line {node.lineno}: a dynamic module under persyn.stages")
            elif isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                parts = arg.value.split(".")
                if parts[:2] == ["persyn", "stages"] and len(parts) > 2 and parts[2] in STAGE_MODULES:
                    hits.append(f"line {node.lineno}: {arg.value}")
    return hits


def test_the_string_import_scan_sees_every_spelling(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "import importlib\n"
        "def f(name):\n"
        "    importlib.import_module(f'persyn.stages.{name}')\n"
        "    __import__('persyn.stages.route')\n"
        "    lazy_exports(__name__, {'persyn.stages.score': ['Scores'], 'persyn.stages.context': []})\n"
        "    importlib.import_module('persyn.stages.context')\n"
    )
    assert [h.split(":")[0] for h in string_imports_of_stages(src)] == ["line 3", "line 4", "line 5"]


def test_no_stage_module_is_imported_by_a_string():
    """The run context finds stages in `STAGES`, given to it; a string import would hide a
    dependency from the scans above (and once hid an import circle)."""
    bad = {
        str(p.relative_to(SRC)): h for p in sorted(SRC.rglob("*.py")) if (h := string_imports_of_stages(p))
    }
    assert not bad, bad


def test_run_order_is_what_the_pipeline_runs():
    from persyn.pipeline import Pipeline
    from persyn.stages import RUN_ORDER

    assert set(RUN_ORDER) <= set(STAGES)
    source = ast.unparse(ast.parse(Path(Pipeline.run.__code__.co_filename).read_text()))
    assert "for name in RUN_ORDER" in source  # Pipeline.run iterates the list, so the list is the order
