"""The app's units dialog (`u`, issue 14 item 1): the active lane's objective edited like the prompt,
and a block picked as the Layers pane numbers it, with a channel, sent to the active lane. Pilot-driven,
paused, on the bundled shapes-a on the CPU."""

from __future__ import annotations

from pathlib import Path

from sessionkit import APP_FLAGS, until

from clipterm.app import build_app
from clipterm.app.objective import UnitsScreen, add_unit
from clipterm.app.ui import ClipTermApp
from clipterm.cli import build_app_parser
from clipterm.unitspec import describe_units

SIZE = (160, 48)


def make_app(path: Path, *extra: str) -> ClipTermApp:
    return build_app(build_app_parser().parse_args([str(path), *APP_FLAGS, *extra]))


def test_a_picked_unit_is_appended_to_the_objective():
    assert add_unit("", 2, "5") == "2:5"
    assert add_unit("2:5:0.5 ", 0, " 17") == "2:5:0.5; 0:17"


async def test_units_are_edited_and_picked_for_the_active_lane(tmp_path, shared_shapes_a):
    app = make_app(tmp_path / "s", "--prompt", "a red circle on a black background")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
            await pilot.press("t")  # lane b is active: the units go to it alone
            await until(pilot, lambda: app.active == "b")
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UnitsScreen), what="the units dialog")
            await pilot.press(*"2:5:0.5", "enter")
            await until(pilot, lambda: describe_units(e.lanes["b"].spec) == "2:5:0.5", what="units on lane b")
            assert describe_units(e.lanes["a"].spec) == "" and e.lanes["b"].similarity_terms()  # the prompt stays
            # pick block 1 (the Layers pane's block1) and channel 7: added to what the lane has
            await until(pilot, lambda: app.snapshot.lanes["b"].spec == e.lanes["b"].spec, what="a fresh snapshot")
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UnitsScreen))
            dialog = app.screen
            assert dialog.query_one("#units-text").value == "2:5:0.5"
            assert dialog.blocks == ["block0", "block1", "block2"]
            await pilot.press("tab", "down", "enter", *"7", "enter")  # the block list, block 1, the channel
            assert dialog.query_one("#units-text").value == "2:5:0.5; 1:7"
            await pilot.press("enter")
            await until(pilot, lambda: describe_units(e.lanes["b"].spec) == "2:5:0.5; 1:7", what="picked unit")
            assert e.changes[-1] == {"step": 0, "lane": "b", "key": "units", "old": "2:5:0.5", "new": "2:5:0.5; 1:7"}
            # a typo stays in the dialog; an out-of-range channel is refused by the worker, with the ranges
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UnitsScreen))
            await pilot.press("ctrl+u", *"2:x", "enter")
            assert isinstance(app.screen, UnitsScreen) and "expected BLOCK:CHANNEL" in str(
                app.screen.query_one("#units-error").render()
            )
            await pilot.press("ctrl+u", *"2:500", "enter")
            await until(pilot, lambda: not isinstance(app.screen, UnitsScreen))
            log = lambda: "\n".join(str(line.text) for line in app.query_one("#log").lines)  # noqa: E731
            await until(pilot, lambda: "channel 500 is out of range" in log(), what="the refusal")
            assert "has channels 0-127" in log() and describe_units(e.lanes["b"].spec) == "2:5:0.5; 1:7"
            await pilot.press("u", "escape")
            await until(pilot, lambda: not isinstance(app.screen, UnitsScreen))
            await pilot.press("full_stop")
            await until(pilot, lambda: app.run_.steps == 1, what="a step with the units")
    finally:
        app.controller.shutdown()


async def test_a_new_app_session_with_units_alone_has_no_prompt(tmp_path, shared_shapes_a):
    app = make_app(tmp_path / "u", "--unit", "2:5")
    e = app.run_.engine
    try:
        assert e.prompt == "" and not e.lanes["a"].similarity_terms()
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
            await pilot.press("full_stop")
            await until(pilot, lambda: app.run_.steps == 1, what="a step of units alone")
            await pilot.press("u")
            await until(pilot, lambda: isinstance(app.screen, UnitsScreen))
            assert app.screen.query_one("#units-text").value == "2:5"
            await pilot.press("ctrl+u", "enter")  # removing the only objective is refused by the worker
            log = lambda: "\n".join(str(line.text) for line in app.query_one("#log").lines)  # noqa: E731
            await until(pilot, lambda: "objective would be empty" in log(), what="the refusal")
            assert describe_units(e.lanes["a"].spec) == "2:5"
    finally:
        app.controller.shutdown()


async def test_a_block_picked_in_the_layers_pane_opens_the_units_dialog_on_it(tmp_path, shared_shapes_a):
    """Layers pane, cursor on block 2's row, enter: the dialog opens with block 2 chosen and the channel
    field focused; '5', enter, enter sends 2:5 to the active lane."""
    from clipterm.app.widgets import LayersPane

    app = make_app(tmp_path / "s", "--prompt", "a red circle on a black background", "--lanes", "ab")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None, what="first snapshot")
            await pilot.press("l", "full_stop")  # the Layers pane, and a step so it has a probe record
            pane = app.query_one(LayersPane)
            await until(pilot, lambda: len(pane.values()) == 4, what="canvas + 3 block rows")
            table = pane.query_one("#layer-table")
            table.focus()
            await pilot.pause()
            await pilot.press("down", "down", "down", "enter")  # row 3: block 2
            await until(pilot, lambda: isinstance(app.screen, UnitsScreen), what="the units dialog")
            dialog = app.screen
            assert dialog.query_one("#units-blocks").highlighted == 2
            assert dialog.query_one("#units-channel").has_focus
            await pilot.press("5", "enter")
            assert dialog.query_one("#units-text").value == "2:5"
            await pilot.press("enter")
            await until(pilot, lambda: describe_units(e.lanes["a"].spec) == "2:5", what="2:5 on lane a")
            assert describe_units(e.lanes["b"].spec) == ""
    finally:
        app.controller.shutdown()
