"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_in_thirty_lines_runs(capsys):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## In thirty lines") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "linear [0.16" in out
