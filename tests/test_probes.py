"""Layer probes: what they record, that they never change a trajectory, and how sessions keep them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sessionkit import make_run

from clipterm import session as sess
from clipterm.engine import Engine
from clipterm.errors import SessionError
from clipterm.presets import preset
from clipterm.probes import STAT_COLUMNS, Probe, configure, layer_names, layer_rows
from clipterm.runner import Run

PROMPT = "a blue square on a black background"
LANES = {"a": preset("unconstrained"), "b": preset("constrained")}
COL = {c: i for i, c in enumerate(STAT_COLUMNS)}


def probed_engine(bundle, every: int, lanes=None) -> Engine:
    e = Engine(bundle, PROMPT, dict(lanes or LANES), seed=3, eval_every=0)
    e.probe = Probe.for_model(bundle.model, every)
    return e


def test_vit_blocks_recorded_every_k_steps(shapes_a):
    e = probed_engine(shapes_a, 3)
    e.step(7)
    assert layer_names(shapes_a.model) == ["canvas", "block0", "block1", "block2"]
    for lane in "ab":
        arr = e.probe.lane_arrays(lane)
        stats, steps = arr["probes"], arr["probe_steps"]
        assert stats.dtype == np.float32 and steps.dtype == np.int64
        assert stats.shape == (3, 4, 6) and steps.tolist() == [1, 3, 6]
        assert np.isfinite(stats).all()
        assert (stats[:, :, COL["act_norm"]] > 0).all() and (stats[:, :, COL["grad_norm"]] > 0).all()
        assert (stats[:, :, COL["act_std"]] > 0).all() and (stats[:, :, COL["grad_std"]] > 0).all()
        step, rec = e.probe.latest(lane)  # what the app's Layers view shows
        assert step == 6 and np.array_equal(rec, stats[-1])


def test_resnet_stages_recorded(shapes_b):
    e = probed_engine(shapes_b, 2)
    e.step(4)
    assert layer_names(shapes_b.model) == ["canvas", "layer1", "layer2", "layer3", "layer4"]
    stats = e.probe.lane_arrays("b")["probes"]
    assert stats.shape == (3, 5, 6) and np.isfinite(stats).all() and (stats[:, 1:, COL["grad_norm"]] > 0).all()


def test_probing_leaves_the_trajectory_bit_identical(shapes_a):
    plain = Engine(shapes_a, PROMPT, dict(LANES), seed=3, eval_every=0)
    probed = probed_engine(shapes_a, 1)
    plain.step(3)
    probed.step(3)
    for lane in "ab":
        assert torch.equal(plain.lanes[lane].image.tensors["param"], probed.lanes[lane].image.tensors["param"])
    plain.flush()
    probed.flush()
    assert np.array_equal(plain.lanes["a"].history, probed.lanes["a"].history)


def test_canvas_row_is_the_image_gradient_and_lanes_are_split(shapes_a):
    both = probed_engine(shapes_a, 1)
    both.step(1)
    ln = both.lanes["a"]
    rec = both.probe.lane_arrays("a")["probes"][0]
    g = ln.image.tensors["param"].grad
    assert rec[0, COL["grad_norm"]] == pytest.approx(float(g.norm()), rel=1e-5)
    assert rec[0, COL["grad_mean"]] == pytest.approx(float(g.mean()), rel=1e-4, abs=1e-9)
    # lane A's slice of every block's statistics is what lane A alone produces
    alone = probed_engine(shapes_a, 1, {"a": LANES["a"]})
    alone.step(1)
    solo = alone.probe.lane_arrays("a")["probes"][0]
    np.testing.assert_allclose(rec, solo, rtol=1e-4, atol=1e-7)


def test_off_means_no_hooks_and_no_records(shapes_a):
    e = probed_engine(shapes_a, 0)
    e.step(3)
    assert e.probe.lane_arrays("a")["probes"].shape == (0, 4, 6)
    assert all(not b._forward_hooks for b in e.probe.blocks)


def test_session_keeps_and_continues_probe_records(tmp_path, shapes_a):
    path = tmp_path / "s"
    run = Run.create(path, shapes_a, PROMPT, dict(LANES), seed=1, eval_every=0)
    assert run.engine.probe.every == 10  # on by default
    configure(run.engine, 2)
    run.step(5)
    run.save()
    run.close()
    for lane in "ab":
        stats = np.load(path / f"lane-{lane}" / "probes.npy", allow_pickle=False)
        steps = np.load(path / f"lane-{lane}" / "probe_steps.npy", allow_pickle=False)
        assert stats.dtype == np.float32 and stats.shape == (3, 4, 6)
        assert steps.dtype == np.int64 and steps.tolist() == [1, 2, 4]
    first = np.load(path / "lane-a" / "probes.npy")
    run = Run.resume(path, shapes_a)
    configure(run.engine, 3)
    run.step(2)  # to 7: one more record at 6
    configure(run.engine, 0)
    run.step(2)  # off: nothing at 8 or 9
    run.save()
    run.close()
    s = sess.load(path)
    assert s.arrays["a"]["probe_steps"].tolist() == [1, 2, 4, 6]
    np.testing.assert_array_equal(s.arrays["a"]["probes"][:3], first)


def test_rolled_back_engine_forgets_the_abandoned_records(tmp_path, shapes_a):
    """The app rolls an engine back to its last save after a failure; probe steps must stay valid."""
    path = tmp_path / "s"
    run = Run.create(path, shapes_a, PROMPT, {"a": LANES["a"]}, seed=1, eval_every=0)
    configure(run.engine, 1)
    run.step(2)
    run.save()
    run.step(2)  # records at 3 and 4, then the failure
    s = sess.load(path)
    run.engine.load_lane_state("a", s.arrays["a"])  # what the app's rollback does
    run.save()
    assert sess.load(path).arrays["a"]["probe_steps"].tolist() == [1, 2]
    run.step(1)
    run.save()
    run.close()
    assert sess.load(path).arrays["a"]["probe_steps"].tolist() == [1, 2, 3]


def test_older_sessions_without_probe_files_still_load(tmp_path, shapes_a, capsys):
    path = make_run(tmp_path / "s", "--probe-every", "0", "--quiet", "--lanes", "a", prompt=PROMPT, steps=3)
    stats = np.load(path / "lane-a" / "probes.npy")
    assert stats.shape == (0, 4, 6)
    s = sess.load(path)
    assert len(s.arrays["a"]["probe_steps"]) == 0
    # a session written before probes existed: no probe files at all
    run = Run.resume(path, shapes_a)
    run.engine.probe = None
    sess.save(run.to_session())
    run.close()
    for name in ("probes.npy", "probe_steps.npy"):
        (path / "lane-a" / name).unlink(missing_ok=True)
    s = sess.load(path)
    assert "probes" not in s.arrays["a"]
    run = Run.resume(path, shapes_a)
    configure(run.engine, 4)
    run.step(1)
    run.save()
    run.close()
    assert sess.load(path).arrays["a"]["probe_steps"].tolist() == [4]
    capsys.readouterr()


def test_mismatched_probe_files_are_refused(tmp_path, shapes_a):
    path = tmp_path / "s"
    run = Run.create(path, shapes_a, PROMPT, {"a": LANES["a"]}, seed=1, eval_every=0)
    run.step(2)
    s = run.to_session()
    s.arrays["a"]["probe_steps"] = np.array([1, 2, 3], np.int64)  # 3 steps for 1 record
    sess.save(s)
    run.close()
    with pytest.raises(SessionError, match="probe"):
        sess.load(path)


def test_layer_rows_for_the_layers_view():
    stats = np.arange(2 * 3 * 6, dtype=np.float32).reshape(2, 3, 6)
    rows = layer_rows(stats, ["canvas", "block0", "block1"])
    assert rows[0] == ("canvas", 18.0, 19.0, 20.0, 23.0)
    assert [r[0] for r in rows] == ["canvas", "block0", "block1"]
    assert layer_rows(stats[0], ["x"])[1][0] == "block 1"  # names that do not fit: generic ones
    assert layer_rows(np.zeros((0, 3, 6), np.float32), []) == []
    with pytest.raises(ValueError):
        layer_rows(np.zeros((3, 5)), [])
