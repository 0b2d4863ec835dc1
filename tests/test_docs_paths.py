"""Every repository path that the docs (docs/*.md, README.md, bench/README.md) and the code comments (vaeiso_ext/,
csrc/) name exists, so that a rename or a move cannot leave a dangling reference behind.

A path is recognised as a token with at least one slash and a known file extension
(``csrc/ssim/ssim.cpp``, ``ops/_ssim.py``, ``bench/README.md``), or as the target of a relative
markdown link (files and folders alike). It resolves against the repository root, the folder of
the file that names it, or as the tail of a repository path (``ops/_ssim.py`` for
``vaeiso_ext/ops/_ssim.py``). A bare source or doc file name (``ssim_cpu_impl.h``, ``nn.py``)
must be the name of some repository file. Python files contribute their comments and docstrings, C++/CUDA
files their comments; code itself is the compiler's and the import system's to check.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Named on purpose although not in the repository; keep this short and say why for each.
ALLOWED_PREFIXES = (
    "out/",  # run folders the CLI and `make demo` write (git-ignored)
    "build/",  # build folders (git-ignored)
    "OUT/",
    "OUTDIR/",
    "DIR/",  # placeholders for a folder the user chooses
    "ATen/",
    "c10/",
    "torch/",  # headers of the PyTorch installation, not of this repository
    "wheelhouse/",  # made by scripts/gpu_wheelhouse.sh on another machine, beside the checkout
)

# Bare names named on purpose although not in the repository.
ALLOWED_NAMES = {
    "_build_info.py",  # written at build time from csrc/_build_info.py.in
}

EXTENSIONS = (
    "py",
    "md",
    "h",
    "hpp",
    "cpp",
    "cu",
    "cuh",
    "txt",
    "toml",
    "json",
    "sh",
    "cff",
    "png",
    "in",
    "yml",
    "yaml",
    "cfg",
    "pt",
    "log",
    "csv",
    "npz",
)
# a token that starts a path: not preceded by a path character (so no URL or absolute path tail)
PATH_RE = re.compile(
    r"(?<![\w./\-<])((?:\.\./|\./)*(?:[\w.\-]+/)+[\w.\-]+\.(?:" + "|".join(EXTENSIONS) + r"))(?![\w/*])"
)
# a bare file name of a source or doc kind (no slash; not a <family>_x.h pattern or a glob)
NAME_RE = re.compile(r"(?<![\w./\-<>*{])([\w\-]+\.(?:py|md|h|hpp|cpp|cu|cuh|sh|toml|cff|txt))(?![\w/*])")
LINK_RE = re.compile(r"\]\(([^)\s]+)\)")
SKIP_DIRS = {".git", ".venv", "build", "out", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _repo_files() -> list[str]:
    files = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT)
        if rel.parts and rel.parts[0] in SKIP_DIRS or any(part in SKIP_DIRS for part in rel.parts):
            continue
        files.append(rel.as_posix())
    return files


FILES = _repo_files()
NAMES = {f.split("/")[-1] for f in FILES}
TAILS = set()
for f in FILES:
    parts = f.split("/")
    for i in range(1, len(parts)):
        TAILS.add("/".join(parts[i:]))


def _exists(name: str, where: Path) -> bool:
    name = name.split("#")[0].rstrip("/")
    if not name:
        return True  # an anchor on the same page
    if name.startswith(ALLOWED_PREFIXES):
        return True
    if (where / name).exists() or (ROOT / name).exists():
        return True
    return name.lstrip("./") in TAILS


def _python_text(src: str) -> str:
    """The comments and docstrings of a Python source."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            out.append(tok.string)
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append(doc)
    return "\n".join(out)


def _cxx_text(src: str) -> str:
    """The comments of a C++/CUDA source (string literals are skipped first)."""
    src = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', src)
    return "\n".join(m.group(0) for m in re.finditer(r"//[^\n]*|/\*.*?\*/", src, flags=re.S))


def _sources():
    for p in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "bench" / "README.md"]:
        yield p, p.read_text(), True
    for p in sorted((ROOT / "vaeiso_ext").rglob("*.py")):
        yield p, _python_text(p.read_text()), False
    for ext in ("*.h", "*.cpp", "*.cu", "*.cuh", "*.in"):
        for p in sorted((ROOT / "csrc").rglob(ext)):
            yield p, _cxx_text(p.read_text()), False


def dangling(path: Path, text: str, markdown: bool) -> list[str]:
    """The paths ``text`` (from ``path``) names that do not exist."""
    names = set(PATH_RE.findall(text))
    if markdown:
        names |= {t for t in LINK_RE.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")}
    missing = {n for n in names if not _exists(n, path.parent)}
    missing |= {n for n in NAME_RE.findall(text) if n not in NAMES and n not in ALLOWED_NAMES}
    return sorted(missing)


def test_every_named_path_exists():
    missing = []
    for path, text, markdown in _sources():
        missing += [f"{path.relative_to(ROOT)}: {name}" for name in dangling(path, text, markdown)]
    assert not missing, "paths named but not in the repository:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    "text, markdown",
    [
        ("see docs/no_such_page.md for more", False),
        ("the wrapper (vaeiso_ext/ops/_no_such_module.py)", False),
        ("[a link](no_such_folder/)", True),
        ("the kernels in ssim_no_such_file.h", False),
    ],
)
def test_a_missing_path_is_reported(text, markdown):
    assert dangling(ROOT / "docs" / "x.md", text, markdown)


@pytest.mark.parametrize(
    "text, markdown",
    [
        ("see docs/ops.md and ops/_ssim.py and csrc/ssim/ssim.cpp:12", False),
        ("[the bench](../bench/README.md), [figures](figures/), [anchor](#x), [web](https://x.org/a/b.md)", True),
        ("written to out/demo/results.json; the header <ATen/core/Tensor.h>; <family>_math.h", False),
        ("ssim_cpu_impl.h, nn.py and _build_info.py", False),
    ],
)
def test_existing_or_allowed_paths_pass(text, markdown):
    assert dangling(ROOT / "docs" / "x.md", text, markdown) == []
