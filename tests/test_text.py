"""clipterm.text: what reaches a terminal carries no control characters."""

from clipterm.text import first_control, printable


def test_printable_escapes_c0_c1_del_and_nul() -> None:
    raw = "a red\x1b[31m circle\x07\r\nline2\x00\x7f\x9b2J"
    out = printable(raw)
    assert out == "a red\\x1b[31m circle\\x07\\x0d\\x0aline2\\x00\\x7f\\x9b2J"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


def test_printable_keeps_ordinary_text_and_unicode() -> None:
    for text in ["a red circle", "caf\u00e9 \u00a0\u4e00 | x:-0.5", "back\\slash", ""]:
        assert printable(text) == text


def test_first_control() -> None:
    assert first_control("a red circle") is None
    assert first_control("a\tb\x1b") == "\\x09"
    assert first_control("\x85") == "\\x85"
