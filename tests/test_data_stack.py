"""Image folders with crop boxes and a stack rule (docs/datasets.md#image-folders, Near32/PYTORCH_VAE's XYS stacked input).

Synthetic 40 x 30 PNGs whose eye regions are constant grey levels: after cropping by the CSV boxes
(given at twice the image resolution, box_scale 2) and resizing, each eye channel must be that level.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from vaelab.data import load
from vaelab.data.prepare import DataWarning, StackRule
from vaelab.errors import VaelabError

W, H = 40, 30
FACE_RGB = (250, 10, 120)


def _image(i: int) -> np.ndarray:
    """Background grey 200; right eye x 4+i..11+i, y 6..13 grey 30+i; left eye x 24..33, y 8..15 grey 90+i;
    a coloured 'face' patch x 16..21, y 18..25."""
    a = np.full((H, W, 3), 200, np.uint8)
    a[6:14, 4 + i:12 + i] = 30 + i
    a[8:16, 24:34] = 90 + i
    a[18:26, 16:22] = FACE_RGB
    return a


def _row(i: int, name: str) -> dict:
    # boxes in the CSV at twice the pixel coordinates (xmin, ymin inclusive; xmax, ymax exclusive)
    return {"file": name, "gaze_x": f"{0.1 * i:.1f}", "distance": str(40 + 10 * (i % 2)),
            "reye_xmin": 2 * (4 + i), "reye_ymin": 12, "reye_xmax": 2 * (12 + i), "reye_ymax": 28,
            "leye_xmin": 48, "leye_ymin": 16, "leye_xmax": 68, "leye_ymax": 32,
            "face_xmin": 32, "face_ymin": 36, "face_xmax": 44, "face_ymax": 52}


def _write_csv(path, rows, drop=()):
    cols = [c for c in rows[0] if c not in drop]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _folder(d, n=4, drop=(), edit=None):
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(_image(i)).save(d / f"img{i}.png")
        rows.append(_row(i, f"img{i}" if i % 2 else f"img{i}.png"))  # XYS names come without ".png"
    if edit:
        edit(rows)
    _write_csv(d / "labels.csv", rows, drop)
    return d


def _grey_resized(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a).convert("L").resize((size, size), Image.Resampling.BILINEAR))


def test_stack_rule_parsing():
    r = StackRule.parse("full, reye ,leye:gray")
    assert str(r) == "full:grey,reye:grey,leye:grey" and r.channels == 3 and r.box_names == ["reye", "leye"]
    assert StackRule.parse(["face:rgb"]).channels == 3
    assert StackRule.parse("full").box_names == []
    for bad, msg in (("full:rgb,reye,leye", "gives 5 channels"), ("full,reye", "gives 2 channels"),
                     ("full,,leye", "empty entry"), ("full:blue", "grey or rgb"), (3, "must be a string")):
        with pytest.raises(VaelabError, match=msg):
            StackRule.parse(bad)


@pytest.mark.filterwarnings("ignore:.*skipped 1 non-image")  # labels.csv, when csv=False
def test_xys_stack_crops_boxes_at_twice_resolution(tmp_path, data_home):
    d = _folder(tmp_path / "xys")
    ds = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    assert tuple(ds.images.shape) == (4, 3, 16, 16)
    for i in range(4):
        img = ds.images[i].numpy()
        assert (img[1] == 30 + i).all(), f"right eye of image {i}"  # the constant eye region, resized
        assert (img[2] == 90 + i).all(), f"left eye of image {i}"
        np.testing.assert_array_equal(img[0], _grey_resized(_image(i), 16))  # grey full image
    # box columns are not factors; the factors are
    assert ds.factor_names == ["gaze_x", "distance"] and ds.factor_sizes == [4, 2]
    assert ds.meta["stack"] == "full:grey,reye:grey,leye:grey" and ds.meta["box_scale"] == 2
    np.testing.assert_array_equal(ds.meta["boxes"]["reye"][3], [14, 12, 30, 28])
    assert "face_xmin" in ds.meta["box_columns"] and set(ds.meta["boxes"]) == {"reye", "leye"}
    assert ds.meta["files"] == ["img0.png", "img1.png", "img2.png", "img3.png"]  # "img1" matched img1.png

    # one RGB crop: the face patch's colour in every channel
    face = load("image-folder", root=d, size=8, stack="face:rgb", box_scale=2)
    assert tuple(face.images.shape) == (4, 3, 8, 8)
    assert [int(face.images[0, c].unique().item()) for c in range(3)] == list(FACE_RGB)
    # stack="full" needs no boxes (grey, one channel), also without a CSV
    grey = load("image-folder", root=d, size=16, stack="full", csv=False)
    assert tuple(grey.images.shape) == (4, 1, 16, 16) and not grey.has_factors
    np.testing.assert_array_equal(grey.images[2, 0].numpy(), _grey_resized(_image(2), 16))


def test_stack_is_part_of_the_cache_key(tmp_path, data_home):
    d = _folder(tmp_path / "xys")
    a = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    again = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    assert again.meta["cache"] == a.meta["cache"]
    swapped = load("image-folder", root=d, size=16, stack="full,leye,reye", box_scale=2)
    assert swapped.meta["cache"] != a.meta["cache"]
    assert (swapped.images[0, 1] == 90).all() and (swapped.images[0, 2] == 30).all()
    plain = load("image-folder", root=d, size=16)
    assert plain.meta["cache"] != a.meta["cache"] and tuple(plain.images.shape) == (4, 3, 16, 16)

    def move_left_eye_box(rows):  # image 0: left-eye box now over the background
        rows[0].update(leye_xmin=2, leye_xmax=6)

    _folder(d, edit=move_left_eye_box)
    moved = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    assert moved.meta["cache"] != a.meta["cache"]
    assert (moved.images[0, 2] == 200).all() and (moved.images[1, 2] == 91).all()


def test_box_partly_outside_is_clipped_wholly_outside_is_an_error(tmp_path, data_home):
    from vaelab.data import prepare

    prepare._WARNED.clear()

    def past_the_border(rows):  # right eye of image 0 from x = 4 to 60 (> 40): clipped at the border
        rows[0].update(reye_xmax=120)

    d = _folder(tmp_path / "clip", edit=past_the_border)
    with pytest.warns(DataWarning, match="1 crop box.*clipped"):
        ds = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    expect = np.asarray(Image.fromarray(_image(0)).convert("L").crop((4, 6, W, 14))  # x 4..39, y 6..13
                        .resize((16, 16), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ds.images[0, 1].numpy(), expect)

    def outside(rows):
        rows[2].update(leye_xmin=100, leye_xmax=120)  # x 50..60 in a 40-pixel-wide image

    d = _folder(tmp_path / "out", edit=outside)
    with pytest.raises(VaelabError) as e:
        load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    msg = str(e.value)
    assert "'leye'" in msg and "img2.png" in msg and "outside the 40x30 image" in msg and "\n" not in msg
    # the same boxes read as pixels (box_scale 1) fall outside too: the scale matters
    with pytest.raises(VaelabError, match="outside"):
        load("image-folder", root=_folder(tmp_path / "scale1"), size=16, stack="full,reye,leye")


@pytest.mark.parametrize("kwargs,drop,edit,match", [
    (dict(stack="full,reye,nose"), (), None, "box 'nose'.*its boxes: face, leye, reye"),
    (dict(stack="full,reey,leye"), (), None, "did you mean 'reye'"),
    (dict(stack="full,reye,leye"), ("reye_ymax",), None, "missing reye_ymax"),
    (dict(stack="full,reye,leye"), (), lambda rows: rows[1].update(reye_xmax=2), "'reye' of img1 is empty"),
    (dict(stack="full,reye,leye"), (), lambda rows: rows[3].update(leye_ymin="n/a"), "leye_ymin of img3 is 'n/a'"),
    (dict(stack="full,reye,leye", channels=1), (), None, "gives 3 channel"),
    (dict(stack="full,reye,leye", preprocess="center_crop_148"), (), None, "preprocess 'resize'"),
    (dict(stack="full,reye,leye", csv=False), (), None, "needs boxes"),
    (dict(box_scale=2), (), None, "box_scale applies only to a stack"),
    (dict(stack="full,reye,leye", box_scale=0), (), None, "positive number"),
    (dict(stacks="full"), (), None, "does not take option 'stacks'.*did you mean 'stack'"),
])
def test_bad_stack_input_is_one_clear_line(tmp_path, data_home, kwargs, drop, edit, match):
    d = _folder(tmp_path / "bad", drop=drop, edit=edit)
    kwargs = {"box_scale": 2, **kwargs} if "stack" in kwargs else kwargs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(VaelabError, match=match) as e:
            load("image-folder", root=d, size=16, **kwargs)
    assert "\n" not in str(e.value)


def test_cli_prepare_with_stack(tmp_path, data_home, capsys):
    from vaelab.cli import main

    d = _folder(tmp_path / "xys")
    rc = main(["data", "prepare", "image-folder", "--source", str(d), "--size", "16", "--stack", "full,reye,leye",
               "--box-scale", "2", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "prepared image-folder: 4 images, 3 x 16 x 16" in out
    assert "channels: full:grey,reye:grey,leye:grey (box_scale 2)" in out
    ds = load("image-folder", root=d, size=16, stack="full,reye,leye", box_scale=2)
    assert ds.meta["cache"] in out  # the API finds what the CLI prepared
    rc = main(["data", "prepare", "image-folder", "--source", str(d), "--size", "16", "--stack", "full,nose,leye",
               "--box-scale", "2", "--quiet"])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and "Traceback" not in err
    assert lines[-1].startswith("vaelab: error: ") and "'nose'" in lines[-1]
    rc = main(["data", "prepare", "faces", "--source", str(d), "--stack", "full"])
    assert rc == 2 and "does not take --stack" in capsys.readouterr().err


def test_xys_preset_reads_the_stack_from_data_options(tmp_path, data_home):
    """The preset's [data] options reach the loader the trainer calls (3 x 256 x 256 stacked input)."""
    from vaelab.config import resolve
    from vaelab.training.trainer import load_dataset

    d = _folder(tmp_path / "xys", n=2)
    cfg = resolve("betavae-xys-near32", [f"data.root={d}"])
    assert cfg.data.options == {"stack": "full,reye,leye", "box_scale": 2}
    ds = load_dataset(cfg)
    assert tuple(ds.images.shape) == (2, 3, 256, 256)
    assert (ds.images[1, 1] == 31).all() and (ds.images[1, 2] == 91).all()
