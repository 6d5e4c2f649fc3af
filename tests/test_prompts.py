"""Prompts: syntax, and control characters refused at every entry (--prompt, prompts files, the app's
field and session.toml all go through `parse_prompt`)."""

from __future__ import annotations

import pytest
from sessionkit import cli

from clipterm import batch
from clipterm.errors import ClipTermError
from clipterm.prompts import PromptError, parse_prompt
from clipterm.text import printable

HOSTILE = [
    "a red\x1b[31m circle\x07\r\nline2",  # the example: colour, bell, CR LF
    "\x01\x02\x1b",  # nothing but controls
    "a red\x00 circle",  # NUL
    "a red circle\x9b2J",  # C1 CSI
    "a red\tcircle",  # tab
    "a red\x7fcircle",  # DEL
]


@pytest.mark.parametrize("prompt", HOSTILE)
def test_parse_prompt_refuses_control_characters(prompt):
    with pytest.raises(PromptError, match="control character") as e:
        parse_prompt(prompt)
    assert printable(str(e.value)) == str(e.value)  # the refusal itself carries no control character


def test_plain_prompts_still_parse():
    assert [t.text for t in parse_prompt("a red circle | a café:-0.5")] == ["a red circle", "a café"]


def test_cli_prompt_with_escapes_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = cli(
        capsys, "run", out, "--steps", "1", "--prompt", HOSTILE[0], "--model", "shapes-a", "--device", "cpu"
    )
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "control character (\\x1b)" in lines[0], err
    assert printable(err.strip()) == err.strip() and not out.exists()


def test_prompts_file_line_with_controls_is_refused_with_its_line_number(tmp_path):
    f = tmp_path / "p.txt"
    for bad in ("a red\x1b[31m circle", "a red\x1c circle", "a red\x85 circle", "a\x0bb"):
        f.write_bytes(f"a blue square\r\n{bad}\n".encode())
        with pytest.raises(ClipTermError, match=r"p\.txt:2: .*control character") as e:
            batch.read_prompts(f)
        assert printable(str(e.value)) == str(e.value)
    f.write_bytes(b"a blue square\r\n  a red circle\t\n")  # CRLF and edge blanks are fine
    assert batch.read_prompts(f) == ["a blue square", "a red circle"]
