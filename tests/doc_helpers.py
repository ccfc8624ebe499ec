"""Reading the code blocks of the README and docs, and running them."""

import os
import re
import subprocess
import sys


def blocks(path, language):
    """The fenced code blocks of `language` in the Markdown file `path`."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def run_script(folder, name, code):
    """Runs `code` as `folder/name` in a fresh interpreter (so the import
    order it shows is what runs), in `folder`; returns its stdout, after
    checking that it exited 0."""
    script = folder / name
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=folder,
                          env=dict(os.environ), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
