"""The house rules a newcomer relies on (docs/design.md, "Layout"): rooms of a readable size."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC_SUFFIXES = {".h", ".cpp", ".cu", ".cuh"}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_package_module_over_500_lines():
    files = sorted((ROOT / "vaeiso_ext").rglob("*.py"))
    assert len(files) > 20
    big = {str(f.relative_to(ROOT)): _lines(f) for f in files if _lines(f) > 500}
    assert big == {}


def test_no_csrc_file_over_600_lines():
    files = sorted(f for f in (ROOT / "csrc").rglob("*") if f.suffix in CSRC_SUFFIXES)
    assert len(files) > 20
    big = {str(f.relative_to(ROOT)): _lines(f) for f in files if _lines(f) > 600}
    assert big == {}


def test_training_steps_are_at_most_80_lines():
    # train() and the steps it is made of (train.py's functions and methods)
    tree = ast.parse((ROOT / "vaeiso_ext" / "train.py").read_text())
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert any(f.name == "train" for f in funcs)
    long = {f.name: f.end_lineno - f.lineno + 1 for f in funcs if f.end_lineno - f.lineno + 1 > 80}
    assert long == {}
