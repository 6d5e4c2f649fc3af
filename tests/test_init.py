"""Start from a photo (issue 14, item 5): `--init IMAGE` starts a new session's lanes from a picture.

Each parameterization fits itself to the picture (pixel exactly, Fourier by its transform, pyramid
coarse to fine by least squares) and says how well; the session keeps its own copy (init.png,
named by the recipe before anything heavy), so a start-up killed at any moment resumes from the
same pixels without the original file; --init on an existing session is refused unless it is the
picture that session started from.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sessionkit import RUN_FLAGS, cli, clipterm, lane_arrays, read_doc, run_killed_at_recipe, snapshot, write_png

from clipterm import initimage, shapes
from clipterm import recipe as rc
from clipterm import session as sess
from clipterm.presets import preset

BLUE = "a blue square on a white background"
LANES = ["--lanes", "b", "--lane", "c=constrained,param=fourier", "--lane", "d=constrained,param=pyramid"]
FIT = re.compile(r"lane (\w): init from (\S+), fit error (\d\.\d{4}) \(max abs\)")


def red_png(tmp_path: Path, name: str = "red.png") -> Path:
    path = tmp_path / name
    Image.fromarray(shapes.render("red", "circle", "black", 15, 30, 30)).save(path)
    return path


def test_a_photo_is_centre_squared_and_kept_at_most_512_px(tmp_path):
    """A wide picture keeps its middle square; a big one is shrunk to 512 px; the canvas is the model's size."""
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = (200, 10, 10)  # only the middle third is red
    Image.fromarray(wide).save(tmp_path / "wide.png")
    img = initimage.prepare(tmp_path / "wide.png")
    assert img.pixels.shape == (100, 100, 3) and (img.pixels == (200, 10, 10)).all()
    canvas = img.canvas(64)
    assert canvas.shape == (3, 64, 64) and canvas.dtype == np.float32
    assert np.allclose(canvas[:, 8:56, 8:56].reshape(3, -1).mean(1), np.array([200, 10, 10]) / 255, atol=1e-3)
    Image.new("RGB", (900, 700), (1, 2, 3)).save(tmp_path / "big.png")
    assert initimage.prepare(tmp_path / "big.png").pixels.shape == (512, 512, 3)
    again = initimage.prepare(tmp_path / "wide.png")
    assert again.digest == img.digest and again.digest != initimage.prepare(tmp_path / "big.png").digest


def test_init_starts_every_lane_from_the_picture(tmp_path, capsys):
    photo = red_png(tmp_path)
    s = tmp_path / "s"
    code, _, err = cli(capsys, "run", s, "--init", photo, "--prompt", BLUE, "--steps", "0", *RUN_FLAGS[:4], *LANES)
    assert code == 0, err
    fits = {lane: (source, float(e)) for lane, source, e in FIT.findall(err)}
    assert sorted(fits) == ["b", "c", "d"] and {src for src, _ in fits.values()} == {str(photo)}
    assert fits["b"][1] == 0.0 and fits["c"][1] < 1e-3 and fits["d"][1] < 1e-3
    want = np.asarray(Image.open(photo), np.float32).transpose(2, 0, 1) / 255  # 64 px: no resize
    arrays = lane_arrays(s)
    for lane in "bcd":
        assert np.abs(arrays[f"lane-{lane}/image.npy"] - want).max() < 1e-3, lane
        assert np.abs(arrays[f"lane-{lane}/best.npy"] - want).max() < 1e-3, lane
    # the pyramid lane's picture sits mostly in its coarse levels, not all in the finest
    assert np.abs(arrays["lane-d/level64.npy"]).mean() < np.abs(arrays["lane-d/level1.npy"]).mean()
    (change,) = [c for c in read_doc(s)["changes"] if c["key"] == "init"]
    assert change["step"] == 0 and change["new"] == f"{photo} sha256:{initimage.prepare(photo).digest}"
    assert np.array_equal(np.asarray(Image.open(s / initimage.INIT_FILE)), np.asarray(Image.open(photo)))
    code, out, _ = cli(capsys, "info", s)
    assert code == 0 and f"init     {photo} (pixels sha256 " in out


def test_a_startup_killed_after_its_recipe_resumes_from_the_sessions_copy(tmp_path):
    """Killed as soon as the recipe is on disk, the original photo then deleted: `clipterm run S --steps N`
    makes the same session as a run that went through in one go."""
    flags = [*RUN_FLAGS, *LANES]
    one_go = tmp_path / "one"
    proc = clipterm("run", one_go, "--init", red_png(tmp_path, "first.png"), "--steps", 3, *flags)
    assert proc.returncode == 0, proc.stderr
    photo = red_png(tmp_path, "photo.png")
    s = tmp_path / "s"
    run_killed_at_recipe(s, "--init", photo, "--steps", 3, *flags)
    assert not (s / sess.TOML_NAME).exists() and rc.read(s).init_sha256 == initimage.prepare(photo).digest
    photo.unlink()  # resume never needs the original

    proc = clipterm("run", s, "--steps", 3, "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "from its recipe" in proc.stderr and len(re.findall(r"init from \S+photo.png, fit error", proc.stderr)) == 3
    want, got = lane_arrays(one_go), lane_arrays(s)
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k], want[k], equal_nan=True), k
    assert [c["new"].rpartition(" sha256:")[2] for c in read_doc(s)["changes"]] == [
        c["new"].rpartition(" sha256:")[2] for c in read_doc(one_go)["changes"]
    ]


def test_init_again_on_a_session_resumes_only_with_the_same_picture(tmp_path, capsys):
    photo = red_png(tmp_path)
    s = tmp_path / "s"
    base = ["run", s, "--steps", "1", "--model", "shapes-a", "--device", "cpu", "--quiet", "--lanes", "b"]
    assert cli(capsys, *base, "--init", photo, "--prompt", BLUE)[0] == 0
    code, _, err = cli(capsys, *base[:2], "--steps", "2", *base[4:], "--init", photo)  # the same command, further
    assert code == 0, err
    other = tmp_path / "blue.png"
    Image.fromarray(shapes.render("blue", "square", "white", 18, 40, 25)).save(other)
    plain = tmp_path / "plain"
    assert cli(capsys, "run", plain, "--prompt", BLUE, *base[2:])[0] == 0
    before = snapshot(tmp_path)
    for session, picture, why in ((s, other, "from another picture"), (plain, photo, "from noise")):
        code, _, err = cli(capsys, "run", session, "--steps", "3", "--device", "cpu", "--init", picture)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "--init" in lines[0] and why in lines[0], err
    assert snapshot(tmp_path) == before


def _file(name: str, data: bytes):
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _truncated(d: Path) -> Path:
    (d / "cut.png").write_bytes(red_png(d).read_bytes()[:60])
    return d / "cut.png"


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d / "missing.png", "no such image file"),
        (_file("empty.png", b""), "not a readable image"),
        (_file("text.png", b"not a picture"), "not a readable image"),
        (_truncated, "not a readable image"),
        (lambda d: d, "is a directory"),
        (lambda d: write_png(d / "bomb.png", 60000, 60000, rows=False), "decompression bomb"),
    ],
    ids=["missing", "empty", "text", "truncated", "directory", "bomb-header"],
)
@pytest.mark.parametrize("batch", [False, True], ids=["run", "batch"])
def test_a_bad_init_picture_is_one_line_and_writes_nothing(tmp_path, capsys, make, needle, batch):
    pics = tmp_path / "pics"
    pics.mkdir()
    bad = make(pics)
    out = tmp_path / "out"
    if batch:
        (tmp_path / "p.txt").write_text(BLUE + "\n")
        head = ["--prompts-file", tmp_path / "p.txt"]
    else:
        head = ["--prompt", BLUE]
    code, _, err = cli(capsys, "run", out, *head, "--init", bad, "--steps", "2", "--model", "shapes-a")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert not out.exists()


def test_a_recipe_whose_init_png_was_swapped_is_refused(tmp_path, capsys):
    """The recipe names its picture by the pixels' sha256; another init.png is refused, and left alone."""
    s = tmp_path / "s"
    s.mkdir()
    img = initimage.prepare(red_png(tmp_path))
    r = rc.Recipe(
        prompt=BLUE, seed=0, lanes={"b": preset("constrained")}, model="shapes-a",
        init_source=img.source, init_sha256=img.digest,
    )  # fmt: skip
    rc.write_init(s, img)
    rc.write(s, r)
    assert rc.read(s) == r and "recipe_version = 2" in (s / rc.RECIPE).read_text()
    Image.fromarray(shapes.render("blue", "square", "white", 18, 40, 25)).save(s / initimage.INIT_FILE)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "run", s, "--steps", "1", "--device", "cpu", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not hold the picture" in err, err
    assert snapshot(tmp_path) == before


def test_batch_sessions_start_from_the_picture(tmp_path, capsys):
    photo = red_png(tmp_path)
    (tmp_path / "p.txt").write_text(f"{BLUE}\na green triangle on a black background\n")
    out = tmp_path / "batch"
    argv = ["run", out, "--prompts-file", tmp_path / "p.txt", "--init", photo, "--lanes", "b", "--judge", "none"]
    code, _, err = cli(capsys, *argv, "--steps", "0", "--model", "shapes-a", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert len(FIT.findall(err)) == 2
    want = np.asarray(Image.open(photo), np.float32).transpose(2, 0, 1) / 255
    for d in (p for p in out.iterdir() if p.is_dir()):
        assert np.abs(np.load(d / "lane-b" / "image.npy") - want).max() < 1e-6
        assert initimage.recorded(read_doc(d)["changes"]) == initimage.prepare(photo).digest
    code, _, err = cli(capsys, *argv, "--steps", "1", "--device", "cpu", "--quiet")  # the same command resumes
    assert code == 0, err


def test_an_init_png_left_by_a_crash_is_reused_but_a_users_is_left_alone(tmp_path, capsys):
    """init.png is written under the lock: beside .lock it is a crashed start-up's (a new start replaces
    it); alone in a directory it is the user's, and that directory is not a new session's."""
    mine = tmp_path / "mine"
    mine.mkdir()
    red_png(mine, initimage.INIT_FILE)
    with pytest.raises(sess.SessionError, match="not an empty directory"):
        rc.check_new_session_dir(mine)
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    red_png(crashed, initimage.INIT_FILE)
    (crashed / sess.LOCK).write_text("12345")
    rc.check_new_session_dir(crashed)
    code, _, err = cli(capsys, "run", crashed, "--prompt", BLUE, "--steps", "0", *RUN_FLAGS[:4], "--lanes", "b")
    assert code == 0, err
    assert not (crashed / initimage.INIT_FILE).exists()  # started from noise: no stale picture left as its record
    assert initimage.recorded(read_doc(crashed)["changes"]) is None
