"""Image sets: CelebA (real faces), 3D Chairs, Cars3D, faces, generic folders with a CSV."""
from __future__ import annotations

import shutil
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from vaelab.data import load
from vaelab.data.prepare import DataWarning
from vaelab.errors import VaelabError


@pytest.fixture(scope="module")
def celeba_dir(shared_data):
    d = shared_data / "celeba"
    if not (d / "img_align_celeba" / "000001.jpg").is_file():
        pytest.skip(f"CelebA pieces missing in {d}")
    return d


def _png(path, value, size=(20, 16), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(a).convert(mode).save(path)


# ---------------------------------------------------------------------------------------- CelebA
def test_real_celeba_folder(celeba_dir, data_home):
    from vaelab.data import prepare

    prepare._WARNED.clear()  # warnings come once per process; this test wants to see them
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = load("celeba", root=celeba_dir)
    assert tuple(ds.images.shape) == (100, 3, 64, 64)
    assert str(ds.images.dtype) == "torch.uint8"
    assert len(ds.factor_names) == 40 and ds.factor_sizes == [2] * 40
    assert ds.factor_names[20] == "Male"
    assert ds.factors.shape == (100, 40) and set(ds.factors.unique().tolist()) == {0, 1}
    # 000001.jpg: -1 1 1 -1 ... (5_o_Clock_Shadow no, Arched_Eyebrows yes, Attractive yes)
    assert ds.factors[0, :3].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(ds.factor_values[0], [-1, 1])
    assert ds.meta["files"][0].endswith("000001.jpg")
    texts = " ".join(str(x.message) for x in w if issubclass(x.category, DataWarning))
    assert "202,599" in texts and "100 rows" in texts  # the cut-short attribute file
    # a second load opens the cache, center_crop_148 and 32/128 are other caches
    again = load("celeba", root=celeba_dir)
    assert again.meta["cache"] == ds.meta["cache"]
    np.testing.assert_array_equal(again.images[:3].numpy(), ds.images[:3].numpy())
    crop = load("celeba", root=celeba_dir, size=32, preprocess="center_crop_148")
    assert tuple(crop.images.shape) == (100, 3, 32, 32) and crop.meta["cache"] != ds.meta["cache"]
    with pytest.raises(VaelabError, match="size 48"):
        load("celeba", root=celeba_dir, size=48)
    with pytest.raises(VaelabError, match="list_eval_partition"):
        load("celeba", root=celeba_dir, split="test")


def test_celeba_zip_with_partition(celeba_dir, tmp_path, data_home):
    root = tmp_path / "celeba"
    root.mkdir()
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as z:
        for i in range(1, 13):
            z.write(celeba_dir / "img_align_celeba" / f"{i:06d}.jpg", f"img_align_celeba/{i:06d}.jpg")
    lines = (celeba_dir / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(["12"] + lines[1:14]) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {0 if i <= 8 else (1 if i <= 10 else 2)}\n" for i in range(1, 13)))
    train = load("celeba", root=root)
    val = load("celeba", root=root, split="val")
    test = load("celeba", root=root, split="test")
    every = load("celeba", root=root / "img_align_celeba.zip", split="all")
    assert (len(train), len(val), len(test), len(every)) == (8, 2, 2, 12)
    np.testing.assert_array_equal(test.images.numpy(), every.images[10:].numpy())
    np.testing.assert_array_equal(test.factors.numpy(), every.factors[10:].numpy())
    folder = load("celeba", root=celeba_dir, split="train")
    # zip and folder decode the same JPEGs the same way
    np.testing.assert_array_equal(every.images.numpy(), folder.images[:12].numpy())


def test_celeba_attribute_file_problems(tmp_path):
    from vaelab.data.images import read_celeba_attributes

    head = "3\nA B C\n"
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text(head + "1.jpg -1 1 1\n2.jpg 1  1 -1\n3.jpg 1 -")
    with pytest.warns(DataWarning, match="cut short"):
        names, files, values = read_celeba_attributes(p)
    assert names == ["A", "B", "C"] and files == ["1.jpg", "2.jpg"]
    np.testing.assert_array_equal(values, [[-1, 1, 1], [1, 1, -1]])
    p.write_text(head + "1.jpg -1 1 1\n2.jpg 1 x -1\n3.jpg 1 1 1\n")
    with pytest.raises(VaelabError, match="line 4"):
        read_celeba_attributes(p)
    p.write_text(head + "1.jpg -1 1 1\n2.jpg 1 0 -1\n3.jpg 1 1 1\n")
    with pytest.raises(VaelabError, match="line 4: attribute values must be -1 or 1"):
        read_celeba_attributes(p)


# ---------------------------------------------------------------------------------------- 3D Chairs
def _chairs(root, models=("b_chair", "a_chair"), pitches=(20, 30), thetas=(0, 11, 22), skip=None):
    k = 0
    for m in models:
        for p in pitches:
            for t in thetas:
                if skip and (m, p, t) == skip:
                    continue
                _png(root / "rendered_chairs" / m / "renders" / f"image_{k:03d}_p{p:03d}_t{t:03d}_r096.png",
                     (len(m) * 10 + p + t) % 256, size=(30, 30))
                k += 1
    (root / "rendered_chairs" / "all_chair_names.mat").write_bytes(b"not an image")


def test_chairs_folder_grid_and_tar(tmp_path, data_home):
    _chairs(tmp_path / "c")
    ds = load("chairs", root=tmp_path / "c", size=16)
    assert tuple(ds.images.shape) == (12, 3, 16, 16)
    assert ds.factor_names == ["model", "elevation", "azimuth"] and ds.factor_sizes == [2, 2, 3]
    assert ds.is_grid
    np.testing.assert_array_equal(ds.factor_values[1], [20, 30])
    np.testing.assert_array_equal(ds.factor_values[2], [0, 11, 22])
    assert ds.meta["model_names"] == ["a_chair", "b_chair"]  # sorted, never listing order
    img = ds.images_for(np.array([[0, 1, 2]])).numpy()
    assert int(img[0, 0, 8, 8]) == (len("a_chair") * 10 + 30 + 22) % 256
    with tarfile.open(tmp_path / "rendered_chairs.tar", "w") as t:
        t.add(tmp_path / "c" / "rendered_chairs", arcname="rendered_chairs")
    from_tar = load("chairs", root=tmp_path / "rendered_chairs.tar", size=16)
    np.testing.assert_array_equal(from_tar.images.numpy(), ds.images.numpy())
    np.testing.assert_array_equal(from_tar.factors.numpy(), ds.factors.numpy())


def test_chairs_incomplete_is_labelled(tmp_path, data_home):
    _chairs(tmp_path / "c", skip=("a_chair", 20, 11))
    with pytest.warns(DataWarning, match="11 of 12"):
        ds = load("chairs", root=tmp_path / "c", size=8)
    assert len(ds) == 11 and not ds.is_grid


# ---------------------------------------------------------------------------------------- Cars3D
def test_cars3d_mat_files(tmp_path, data_home):
    sio = pytest.importorskip("scipy.io")
    d = tmp_path / "cars"
    d.mkdir()
    for o in range(2):
        im = np.zeros((16, 16, 3, 24, 4), np.uint8)
        for a in range(24):
            for e in range(4):
                im[:, :, 0, a, e] = a * 10
                im[:, :, 1, a, e] = e * 50
                im[:, :, 2, a, e] = o * 100
        sio.savemat(d / f"car_{o + 1:03d}_mesh.mat", {"im": im})
    ds = load("cars", root=d, size=8)
    assert tuple(ds.images.shape) == (4 * 24 * 2, 3, 8, 8)
    assert ds.factor_names == ["elevation", "azimuth", "object"] and ds.factor_sizes == [4, 24, 2] and ds.is_grid
    img = ds.images_for(np.array([[3, 5, 1]])).numpy()[0]
    assert img[:, 4, 4].tolist() == [50, 150, 100]
    (d / "car_003_mesh.mat").write_bytes(b"MATLAB 5.0 truncated")
    with pytest.raises(VaelabError, match="car_003_mesh.mat"):
        load("cars", root=d, size=8)


# ---------------------------------------------------------------------------------------- folders
def test_faces_folder_skips_non_images_and_bad_inputs(tmp_path, data_home):
    d = tmp_path / "faces"
    for i in range(5):
        _png(d / f"{i}.png", i * 40, mode="L" if i == 2 else "RGB")
    _png(d / "sub" / "x.png", 7)
    (d / "notes.txt").write_text("hi")
    with pytest.warns(DataWarning, match="skipped 1 non-image"):
        ds = load("faces", root=d, size=12)
    assert tuple(ds.images.shape) == (6, 3, 12, 12) and not ds.has_factors
    assert ds.meta["files"] == ["0.png", "1.png", "2.png", "3.png", "4.png", "sub/x.png"]
    assert int(ds.images[4, 0, 5, 5]) == 160
    grey = load("faces", root=d, size=12, channels=1)
    assert grey.images.shape[1] == 1
    with pytest.raises(VaelabError, match="no images found"):
        (tmp_path / "empty").mkdir()
        load("faces", root=tmp_path / "empty")
    (d / "5.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VaelabError) as e:
        load("faces", root=d, size=12)
    assert "5.png" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VaelabError, match="vaelab data|DATA_DIR|faces"):
        load("faces")


@pytest.mark.filterwarnings("ignore:.*skipped 1 non-image")
def test_image_folder_with_csv(tmp_path, data_home):
    d = tmp_path / "xys"
    rng = np.random.default_rng(0)
    rows = ["file,colour,gaze_x,count"]
    for i in range(30):
        _png(d / f"img{i:02d}.png", i * 8)
        rows.append(f"img{i:02d}.png,{['red', 'blue', 'green'][i % 3]},{rng.uniform(-1, 1):.4f},{i % 4}")
    rows.append("missing.png,red,0.0,1")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(DataWarning, match="not found"):
        ds = load("image-folder", root=d, size=8)
    assert len(ds) == 30 and not ds.is_grid
    assert ds.factor_names == ["colour", "gaze_x", "count"]
    assert ds.factor_sizes == [3, 20, 4]
    assert ds.meta["factor_labels"]["colour"] == ["blue", "green", "red"]
    assert ds.meta["factor_kinds"] == {"colour": "categorical", "gaze_x": "binned", "count": "discrete"}
    np.testing.assert_array_equal(ds.factor_values[2], [0, 1, 2, 3])
    assert ds.factors[0].tolist()[0] == 2 and ds.factors[1].tolist()[0] == 0  # red, blue
    raw = ds.meta["continuous_values"]["gaze_x"]
    assert len(raw) == 30 and ds.factors[:, 1].min() == 0 and ds.factors[:, 1].max() == 19
    centres = ds.factor_values[1]
    assert np.all(np.abs(centres[ds.factors[:, 1].numpy()] - raw) <= (raw.max() - raw.min()) / 40 + 1e-9)
    (d / "labels.csv").write_text("name,a\nx.png,1\n")
    with pytest.raises(VaelabError, match="'file' column"):
        load("image-folder", root=d)
    plain = load("image-folder", root=d, size=8, csv=False)
    assert not plain.has_factors and len(plain) == 30
    with pytest.raises(VaelabError, match="--root"):
        load("image-folder")


def test_zip_of_images_and_corrupt_zip(tmp_path, data_home):
    d = tmp_path / "imgs"
    for i in range(4):
        _png(d / f"{i}.png", i * 60)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for i in (3, 1, 0, 2):  # stored out of order
            z.write(d / f"{i}.png", f"imgs/{i}.png")
    ds = load("faces", root=tmp_path / "imgs.zip", size=8)
    assert [int(v) for v in ds.images[:, 0, 0, 0]] == [0, 60, 120, 180]
    data = (tmp_path / "imgs.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(VaelabError) as e:
        load("faces", root=tmp_path / "cut.zip")
    assert "cut.zip" in str(e.value)
    shutil.rmtree(d)
