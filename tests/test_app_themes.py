"""Themes: bundled TOML files load as Textual themes, the two copies agree, broken files are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipterm.app.themes import (
    DEFAULT_THEME,
    PACKAGE_THEMES,
    ThemeError,
    discover_themes,
    load_theme_file,
)


def test_at_least_three_themes_ship_with_the_package():
    names = {load_theme_file(p).name for p in PACKAGE_THEMES.glob("*.toml")}
    assert len(names) >= 3 and DEFAULT_THEME in names


def test_repo_themes_match_the_packaged_ones():
    """themes/ (repo top level) and clipterm/app/themes/ (installed package) hold the same files."""
    repo_themes = Path(__file__).resolve().parents[1] / "themes"  # tests/ always sits in the checkout
    assert repo_themes.is_dir(), repo_themes
    repo = {p.name: p.read_bytes() for p in repo_themes.glob("*.toml")}
    pkg = {p.name: p.read_bytes() for p in PACKAGE_THEMES.glob("*.toml")}
    assert repo == pkg


def test_user_theme_overrides_and_broken_file_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    d = tmp_path / "clipterm" / "themes"
    d.mkdir(parents=True)
    (d / "mine.toml").write_text('name = "mine"\nprimary = "#123456"\ndark = false\n')
    (d / "broken.toml").write_text('name = "broken"\nprimary = "not-a-colour"\n')
    warnings: list[str] = []
    themes = discover_themes(warnings.append)
    assert "mine" in themes and themes["mine"].dark is False
    assert "broken" not in themes and "not a colour" in warnings[0]


@pytest.mark.parametrize(
    "text, reason",
    [
        ('name = "x"\n', "'primary' colour is required"),
        ('primary = "#fff"\n', "'name' must be a non-empty string"),
        ('name = "x"\nprimary = "#fff"\nsparkle = 1\n', "unknown theme key(s) sparkle"),
        ('name = "x"\nprimary = "#fff"\n[variables]\na = 1\n', "[variables] must map names to strings"),
        ("name = \n", "TOML syntax error"),
    ],
)
def test_bad_theme_files_are_refused_with_the_reason(tmp_path, text, reason):
    p = Path(tmp_path / "t.toml")
    p.write_text(text)
    with pytest.raises(ThemeError, match=None) as e:
        load_theme_file(p)
    assert reason in str(e.value) and str(p) in str(e.value)
