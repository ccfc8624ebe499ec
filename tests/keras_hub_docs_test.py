"""The keras-hub examples run as written (docs/keras_hub.md and the README).

The Python blocks run, in order, as one script in a fresh interpreter (the
import order they show is part of what is checked); the `mmkeras` command
lines must parse with the real argument parser.
"""

import shlex
from pathlib import Path

from doc_helpers import blocks
from doc_helpers import run_script

from mmkeras import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_keras_hub_guide_python_examples_run(tmp_path):
    code = "\n".join(blocks(DOCS / "keras_hub.md", "python"))
    assert code.lstrip().startswith("import mmkeras")
    out = run_script(tmp_path, "guide.py", code)
    # What the comments in the guide say each print shows.
    assert "['a handwriten seven']" in out
    assert "(4, 8, 8, 1)" in out and "(4, 16)" in out and "(2, 16)" in out
    assert (tmp_path / "tiny_bert" / "config.json").is_file()
    assert (tmp_path / "clip_finetuned.keras").stat().st_size > 1000


def test_readme_keras_hub_example_runs(tmp_path):
    readme = DOCS.parent / "README.md"
    (code,) = [b for b in blocks(readme, "python") if "import keras_hub" in b]
    assert "(4, 16)" in run_script(tmp_path, "readme_hub.py", code)


def test_keras_hub_guide_command_lines_parse():
    lines = [line for block in blocks(DOCS / "keras_hub.md", "bash")
             for line in block.splitlines() if line.startswith("mmkeras ")]
    assert len(lines) >= 4
    parser = cli.build_parser()
    for line in lines:
        args = parser.parse_args(shlex.split(line, comments=True)[1:])
        assert args.command == "train", line
