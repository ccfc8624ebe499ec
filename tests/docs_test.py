"""The README and the docs: the paths they name exist, their Python examples
compile, and the README's fused-attention example runs. (docs/keras_hub.md's
examples also run: tests/keras_hub_docs_test.py.)"""

import re
from pathlib import Path

import pytest
from doc_helpers import blocks

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_LEVEL = ("mmkeras/", "kernels/", "tests/", "docs/", "benchmarks/",
             "examples/", "scripts/", "python/", ".ci/")
# Folders of the package that the architecture document names without the
# leading `mmkeras/`.
PACKAGE_LEVEL = ("ops/", "backend/", "triton_kernels/", "pallas_kernels/",
                 "layers/", "models/", "data/", "distribution/")


def _named_paths(doc):
    """Repository paths a document names: its relative links, and the
    backticked words that start with a folder of the repository or the
    package (templates such as `backend/<framework>_<family>.py` excepted)."""
    text = doc.read_text()
    links = [p for p in re.findall(r"\]\(([^)\s]+)\)", text)
             if not p.startswith(("http:", "https:", "#"))]
    ticked = [w for w in re.findall(r"`([^`\s]+)`", text)
              if not re.search(r"[<>{}*]", w)]
    return (
        [doc.parent / p.split("#")[0] for p in links]
        + [ROOT / w for w in ticked if w.startswith(TOP_LEVEL)]
        + [ROOT / "mmkeras" / w for w in ticked if w.startswith(PACKAGE_LEVEL)]
    )


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_path_a_document_names_exists(doc):
    paths = _named_paths(doc)
    assert paths, f"{doc.name} names no path: the check would be empty"
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_python_examples_compile(doc):
    for i, block in enumerate(blocks(doc, "python")):
        compile(block, f"{doc.name}[python block {i}]", "exec")


def test_readme_attention_example_runs():
    block = blocks(ROOT / "README.md", "python")[0]
    assert "fused_attention" in block
    scope = {}
    exec(compile(block, "README.md[python block 0]", "exec"), scope)
    assert tuple(scope["out"].shape) == (2, 128, 8, 64)
    assert tuple(scope["fused"].shape) == (4, 20, 256)
