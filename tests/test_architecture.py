"""The house rules of docs/architecture.md that a change can break without any other test noticing:
stages never import each other, no module grows past 600 lines, and nothing points at notes
outside the repository."""

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
STAGE_MODULES = set(STAGES.values()) | {"ingest"}


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
