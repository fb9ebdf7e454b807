"""Tests for the wsolevaluation-format reader and its tf.data pipeline.

Every dataset here is written by the test itself (`helpers.data`): tiny real
PNG/JPEG files (cv2) plus the four metadata text files.
"""

import logging
import os

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import data
from helpers.data import (
    BOX_ENTRIES,
    WSOLLayout,
    crop_layout,
    mask_layout,
    random_image,
)

from keras_dualsig.datasets import _image_io, wsol
from keras_dualsig.datasets.wsol import (
    load_wsol,
    read_mask,
    rescale_boxes,
)


@pytest.fixture
def boxes_layout(tmp_path):
    return data.boxes_layout(tmp_path)


def _elements(ds):
    return list(ds.as_numpy_iterator())


# ---------------------------------------------------------------------------
# Parsing and ground truth


def test_read_metadata_multi_box(boxes_layout):
    meta = boxes_layout.read(num_classes=3)
    assert meta.localization == "boxes"
    assert meta.num_classes == 3
    assert [r.image_id for r in meta.records] == ["a/0.png", "a/1.jpg", "b/2.png"]
    first = meta.records[0]
    assert first.boxes == ((10, 5, 49, 39), (1, 2, 3, 4))
    assert first.size == (50, 40)
    assert first.label == 0 and first.line == 1
    assert first.path == os.path.join(str(boxes_layout.data_root), "a/0.png")
    assert meta.max_boxes == 2
    assert len(meta) == 3


def test_rescale_boxes_hand_computed():
    # wsolevaluation's resize_bbox: int(c * new / old).
    # x: 10*25/50 = 5, 49*25/50 = 24.5 -> 24; y: 5*20/40 = 2.5 -> 2, 39*20/40 = 19.5
    np.testing.assert_array_equal(
        rescale_boxes([[10, 5, 49, 39]], (50, 40), (25, 20)), [[5, 2, 24, 19]]
    )
    # A CUB test box (500x375 image) at 224: 26.88, 16.128, 172.48, 197.71.
    np.testing.assert_array_equal(
        rescale_boxes([[60, 27, 385, 331]], (500, 375), (224, 224)),
        [[26, 16, 172, 197]],
    )


def test_boxes_in_dataset_are_rescaled_and_padded(boxes_layout):
    elements = _elements(boxes_layout.load(image_size=(20, 25), num_classes=3))
    first = elements[0]
    assert first["image"].shape == (20, 25, 3)
    assert first["num_boxes"] == 2
    # (10, 5, 49, 39) on 50x40 -> (5, 2, 24, 19); (1, 2, 3, 4) -> (0, 1, 1, 2).
    np.testing.assert_array_equal(first["boxes"], [[5, 2, 24, 19], [0, 1, 1, 2]])
    second = elements[1]
    assert second["num_boxes"] == 1
    # (0, 0, 29, 29) on 30x30 -> x: 29*25/30 = 24.17, y: 29*20/30 = 19.33.
    np.testing.assert_array_equal(second["boxes"], [[0, 0, 24, 19], [-1, -1, -1, -1]])
    assert second["image_id"] == b"a/1.jpg"
    assert [e["label"] for e in elements] == [0, 1, 2]


def test_max_boxes(boxes_layout):
    ds = boxes_layout.load(image_size=16, num_classes=3, max_boxes=4, batch_size=3)
    batch = next(iter(ds))
    assert batch["boxes"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="max_boxes.*a/0.png"):
        boxes_layout.load(image_size=16, num_classes=3, max_boxes=1)


def test_masks_with_ignore_lines(tmp_path):
    layout = mask_layout(tmp_path)
    # OpenImages has no image_sizes.txt and 100 classes (from the folder name).
    meta = layout.read()
    assert meta.localization == "masks"
    assert meta.num_classes == 100
    first, second = meta.records
    assert [os.path.basename(p) for p in first.mask_paths] == [
        "0_m_a.png",
        "0_m_b.png",
    ]
    assert os.path.basename(first.ignore_path) == "0_ignore.png"
    assert second.ignore_path is None and second.size is None

    elements = _elements(layout.load(image_size=(20, 30)))
    assert set(elements[0]) == {"image", "label", "image_id", "mask", "ignore"}
    for element, record in zip(elements, meta.records, strict=True):
        mask, ignore = read_mask(record, size=(30, 20))  # (width, height)
        assert element["mask"].dtype == bool and element["mask"].shape == (20, 30)
        np.testing.assert_array_equal(element["mask"], mask)
        np.testing.assert_array_equal(element["ignore"], ignore)
        assert not (element["mask"] & element["ignore"]).any()
    # Hand check at half resolution, source index 2 * i: left block (rows 10..29,
    # cols 5..19) -> rows 5..14, cols 3..9; right block (value 1; rows 20..34,
    # cols 40..54) -> rows 10..17, cols 20..27; ignore rows 0..7 minus the mask.
    expected = np.zeros((20, 30), bool)
    expected[5:15, 3:10] = True
    expected[10:18, 20:28] = True
    np.testing.assert_array_equal(elements[0]["mask"], expected)
    expected_ignore = np.zeros((20, 30), bool)
    expected_ignore[0:8, :] = True
    expected_ignore &= ~expected
    np.testing.assert_array_equal(elements[0]["ignore"], expected_ignore)
    assert not elements[1]["ignore"].any()


@pytest.mark.parametrize(
    "in_size, out_size",
    [((40, 60), (20, 30)), ((300, 100), (100, 300)), ((375, 500), (224, 224))],
)
def test_nearest_resize_matches_opencv(in_size, out_size):
    source = np.random.default_rng(0).integers(0, 256, in_size, np.uint8)
    ours = _image_io.resize_nearest_like_cv2(tf.constant(source), out_size).numpy()
    theirs = cv2.resize(
        source, (out_size[1], out_size[0]), interpolation=cv2.INTER_NEAREST
    )
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------------------
# Transforms


def test_test_transform_ranges(boxes_layout):
    plain = _elements(boxes_layout.load(image_size=32, num_classes=3))
    images = np.stack([e["image"] for e in plain])
    assert images.dtype == np.float32 and images.shape == (3, 32, 32, 3)
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.9

    seen = []

    def record_range(image):
        seen.append(image)
        return image / 127.5 - 1.0

    custom = _elements(
        boxes_layout.load(image_size=32, num_classes=3, preprocess=record_range)
    )
    np.testing.assert_allclose(
        np.stack([e["image"] for e in custom]), images * 2.0 - 1.0, atol=1e-5
    )
    assert seen and seen[0].dtype == tf.float32 and seen[0].shape == (32, 32, 3)

    imagenet = _elements(
        boxes_layout.load(image_size=32, num_classes=3, preprocess="imagenet")
    )
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(
        imagenet[0]["image"], (images[0] - mean) / std, atol=1e-5
    )

    resnet = _elements(
        boxes_layout.load(
            image_size=32,
            num_classes=3,
            preprocess=keras.applications.resnet50.preprocess_input,
        )
    )
    # Caffe-style: RGB -> BGR, minus the ImageNet mean in 0..255.
    bgr = images[0][..., ::-1] * 255.0 - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(resnet[0]["image"], bgr, atol=1e-3)


def test_resize_is_antialiased_bilinear(boxes_layout):
    (element,) = _elements(
        boxes_layout.load(image_size=(20, 25), num_classes=3).take(1)
    )
    source = cv2.cvtColor(
        cv2.imread(str(boxes_layout.data_root / "a/0.png")), cv2.COLOR_BGR2RGB
    )
    expected = tf.image.resize(source, (20, 25), antialias=True).numpy()
    np.testing.assert_allclose(element["image"] * 255.0, expected, atol=0.51)


def test_train_transform_crops_within_image_and_flips(tmp_path):
    layout, image = crop_layout(tmp_path)
    # resize_size = image size, so the crop is a window of the original pixels.
    ds = layout.load(
        training=True, image_size=32, resize_size=40, num_classes=2, seed=0
    )
    offsets, flips = set(), set()
    for _ in range(12):  # epochs: new crops and flips each time
        (element,) = _elements(ds)
        assert element["label"] == 1
        assert element["image"].shape == (32, 32, 3)
        assert set(element) == {"image", "label", "image_id"}
        crop = np.round(element["image"] * 255).astype(np.uint8)
        found = None
        for flipped in (False, True):
            candidate = crop[:, ::-1] if flipped else crop
            y0, x0 = candidate[0, 0, 0] // 6, candidate[0, 0, 1] // 6
            window = image[y0 : y0 + 32, x0 : x0 + 32]
            if window.shape == crop.shape and np.array_equal(window, candidate):
                found = (y0, x0, flipped)
        assert found is not None, "the crop is not a window of the image"
        offsets.add(found[:2])
        flips.add(found[2])
    assert len(offsets) > 1
    assert flips == {False, True}


def test_train_transform_default_resize_and_supervised(tmp_path):
    layout, _ = crop_layout(tmp_path)
    ds = layout.load(
        training=True, image_size=28, num_classes=2, as_supervised=True, batch_size=1
    )
    images, labels = next(iter(ds))
    assert images.shape == (1, 28, 28, 3) and labels.numpy().tolist() == [1]
    with pytest.raises(ValueError, match="resize_size"):
        layout.load(training=True, image_size=28, resize_size=20, num_classes=2)
    with pytest.raises(ValueError, match="with_localization"):
        layout.load(training=True, with_localization=True, num_classes=2)


def test_training_is_deterministic_for_a_seed(boxes_layout):
    def two_epochs(seed):
        ds = boxes_layout.load(
            training=True, image_size=16, num_classes=3, seed=seed, batch_size=3
        )
        return [next(ds.as_numpy_iterator()) for _ in range(2)]

    first, again, other = two_epochs(3), two_epochs(3), two_epochs(4)
    for a, b in zip(first, again, strict=True):
        assert a["image_id"].tolist() == b["image_id"].tolist()
        np.testing.assert_array_equal(a["image"], b["image"])
    # The second epoch is shuffled and augmented afresh, and so is another seed.
    assert not np.array_equal(first[0]["image"], first[1]["image"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])


def test_cache_matches_uncached(boxes_layout, tmp_path):
    plain = _elements(boxes_layout.load(image_size=24, num_classes=3))
    for cache in (True, str(tmp_path / "cache_file")):
        cached = boxes_layout.load(image_size=24, num_classes=3, cache=cache)
        for _ in range(2):  # the second pass reads the cache
            for a, b in zip(plain, _elements(cached), strict=True):
                np.testing.assert_array_equal(a["image"], b["image"])
                np.testing.assert_array_equal(a["boxes"], b["boxes"])


def test_cached_training_shuffles_every_epoch(boxes_layout):
    ds = boxes_layout.load(
        training=True, image_size=16, num_classes=3, cache=True, seed=0
    )
    orders = {tuple(e["image_id"] for e in _elements(ds)) for _ in range(8)}
    assert len(orders) > 1


# ---------------------------------------------------------------------------
# Validation


def _problem(excinfo):
    return str(excinfo.value)


def test_missing_metadata_files(tmp_path):
    layout = WSOLLayout(tmp_path)
    layout.image("0.png", random_image(8, 8))
    layout.write("image_ids.txt", ["0.png"])
    with pytest.raises(ValueError, match="Missing WSOL metadata") as excinfo:
        layout.load(num_classes=1)
    message = _problem(excinfo)
    assert "class_labels.txt" in message and "localization.txt" in message
    # Without localization (a train-style split) only class_labels is missing.
    with pytest.raises(ValueError, match="class_labels.txt"):
        layout.load(num_classes=1, with_localization=False)
    with pytest.raises(ValueError, match="metadata folder"):
        load_wsol(layout.data_root, layout.metadata_root, "val")


def test_missing_image_sizes_for_boxes(boxes_layout):
    os.remove(boxes_layout.split_dir / "image_sizes.txt")
    with pytest.raises(ValueError, match="image_sizes.txt.*required"):
        boxes_layout.load(num_classes=3)


def test_image_listed_but_absent(boxes_layout):
    os.remove(boxes_layout.data_root / "a/1.jpg")
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "image_ids.txt, line 2" in message
    assert "'a/1.jpg' not found" in message


@pytest.mark.parametrize(
    "image_id, reason",
    [
        ("/etc/passwd", "absolute"),
        ("../outside.png", "climbs out"),
        ("a/../../x.png", "climbs out"),
    ],
)
def test_image_id_outside_data_root(boxes_layout, image_id, reason):
    ids = [e[0] for e in BOX_ENTRIES] + [image_id]
    boxes_layout.write("image_ids.txt", ids)
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "image_ids.txt, line 4" in message
    assert reason in message and image_id in message


def test_label_outside_range(boxes_layout):
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=2)
    message = _problem(excinfo)
    assert "class_labels.txt, line 3" in message
    assert "label 2" in message and "[0, 2)" in message


def test_label_not_an_integer_and_wrong_field_count(boxes_layout):
    boxes_layout.write(
        "class_labels.txt", ["a/0.png,0", "a/1.jpg,one", "b/2.png,2,extra"]
    )
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "class_labels.txt, line 2: label 'one' is not an integer" in message
    assert "class_labels.txt, line 3: expected 2 fields" in message
    assert "b/2.png,2,extra" in message


@pytest.mark.parametrize(
    "box, words",
    [
        ("a/1.jpg,0,0,31,10", "outside the image (width=30, height=30)"),
        ("a/1.jpg,-1,0,10,10", "outside the image"),
        ("a/1.jpg,20,0,10,10", "x1 < x0"),
        ("a/1.jpg,0,20,10,10", "y1 < y0"),
        ("a/1.jpg,0,0,1.5,10", "must be integers"),
    ],
)
def test_bad_boxes(boxes_layout, box, words):
    boxes_layout.write(
        "localization.txt", ["a/0.png,10,5,49,39", box, "b/2.png,3,4,60,20"]
    )
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "localization.txt, line 2" in message and words in message


def test_box_reaching_the_border_is_accepted(boxes_layout):
    # b/2.png is 60 wide and its box has x1 = 60 (x + w, as wsolevaluation's CUB).
    assert boxes_layout.read(num_classes=3).records[2].boxes == ((3, 4, 60, 20),)


def test_inconsistent_files(boxes_layout):
    boxes_layout.write("class_labels.txt", ["a/0.png,0", "b/2.png,2", "zz.png,1"])
    boxes_layout.write("image_sizes.txt", ["a/0.png,50,40", "a/1.jpg,30,30"])
    boxes_layout.write(
        "localization.txt", ["a/0.png,10,5,49,39", "a/1.jpg,0,0,29,29", "q.png,1,1,2,2"]
    )
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "image_ids.txt, line 2: image 'a/1.jpg' has no label" in message
    assert "image_ids.txt, line 3: image 'b/2.png' has no size" in message
    assert "image_ids.txt, line 3: image 'b/2.png' has no box" in message
    assert "class_labels.txt, line 3: label for 'zz.png', which is not in" in message
    assert "localization.txt, line 3: localization for 'q.png'" in message


def test_duplicates(boxes_layout):
    boxes_layout.write("image_ids.txt", [e[0] for e in BOX_ENTRIES] + ["a/0.png"])
    with pytest.raises(ValueError, match=r"image_ids.txt, line 4: duplicate .*line 1"):
        boxes_layout.load(num_classes=3)


def test_many_problems_are_counted(tmp_path):
    layout = WSOLLayout(tmp_path)
    ids = [f"missing_{i}.png" for i in range(25)]
    layout.write("image_ids.txt", ids)
    layout.write("class_labels.txt", [f"{i},0" for i in ids])
    layout.write("localization.txt", [])
    with pytest.raises(ValueError) as excinfo:
        layout.load(num_classes=1, with_localization=False)
    message = _problem(excinfo)
    assert "25 problem(s)" in message
    assert "missing_9.png" in message and "missing_10.png" not in message
    assert "... and 15 more problem(s) not shown." in message


def test_mask_problems(tmp_path):
    layout = mask_layout(tmp_path, ignore_second_line=True)
    os.remove(layout.data_root / "test/x/1_m_a.png")
    with pytest.raises(ValueError) as excinfo:
        layout.load()
    message = _problem(excinfo)
    assert "localization.txt, line 2: ignore path 'test/x/0_ignore.png'" in message
    assert "localization.txt, line 3: mask 'test/x/1_m_a.png' not found" in message


def test_mask_path_outside_mask_root(tmp_path):
    layout = mask_layout(tmp_path)
    layout.write("localization.txt", ["test/x/0.jpg,../m.png,", "test/x/1.png,/m.png,"])
    with pytest.raises(ValueError) as excinfo:
        layout.load()
    message = _problem(excinfo)
    assert "line 1: mask path '../m.png' climbs out of mask_root" in message
    assert "line 2: mask path '/m.png' is absolute" in message
    layout.write(
        "localization.txt",
        ["test/x/0.jpg,test/x/0_m_a.png,../i.png", "test/x/1.png,test/x/1_m_a.png,"],
    )
    with pytest.raises(ValueError, match="line 1: ignore mask path '../i.png' climbs"):
        layout.load()


def test_missing_data_root(boxes_layout, tmp_path):
    with pytest.raises(ValueError, match="argument `data_root`"):
        load_wsol(tmp_path / "nowhere", boxes_layout.metadata_root, "test")


def test_mixed_localization_lines(boxes_layout):
    boxes_layout.write(
        "localization.txt",
        ["a/0.png,10,5,49,39", "a/1.jpg,m.png,", "b/2.png,3,4,60,20"],
    )
    with pytest.raises(ValueError, match="localization.txt, line 2: a mask line"):
        boxes_layout.load(num_classes=3)


def test_size_mismatch_with_file(boxes_layout):
    boxes_layout.write(
        "image_sizes.txt", ["a/0.png,50,40", "a/1.jpg,30,31", "b/2.png,60,20"]
    )
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "image_sizes.txt, line 2: size 30x31" in message
    assert "which is 30x30" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_image_raises_by_default(boxes_layout, damage):
    path = boxes_layout.data_root / "a/1.jpg"
    data = path.read_bytes()
    broken = {
        "garbage": b"not an image" * 10,
        "truncated": data[: len(data) // 3],
        "empty": b"",
    }[damage]
    path.write_bytes(broken)
    with pytest.raises(ValueError) as excinfo:
        boxes_layout.load(num_classes=3)
    message = _problem(excinfo)
    assert "image_ids.txt, line 2: cannot decode image 'a/1.jpg'" in message
    assert str(path) in message


def test_corrupt_image_skipped_on_request(boxes_layout, caplog):
    (boxes_layout.data_root / "a/1.jpg").write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="keras_dualsig.datasets.wsol"):
        ds, info = boxes_layout.load(num_classes=3, on_corrupt="skip", with_info=True)
    assert [e["image_id"] for e in _elements(ds)] == [b"a/0.png", b"b/2.png"]
    assert len(info.skipped) == 1 and info.skipped[0][0] == "a/1.jpg"
    assert "cannot decode image" in info.skipped[0][1]
    assert "Skipped 1 of 3 image(s)" in caplog.text and "a/1.jpg" in caplog.text


def test_corrupt_mask(tmp_path):
    layout = mask_layout(tmp_path)
    (layout.data_root / "test/x/0_m_b.png").write_bytes(b"broken")
    with pytest.raises(
        ValueError, match=r"localization.txt, line 2: cannot decode mask"
    ):
        layout.load()
    ds, info = layout.load(on_corrupt="skip", with_info=True)
    assert [e["image_id"] for e in _elements(ds)] == [b"test/x/1.png"]
    assert info.skipped[0][0] == "test/x/0.jpg"


def test_verification_can_be_switched_off(boxes_layout):
    (boxes_layout.data_root / "a/1.jpg").write_bytes(b"broken")
    ds = boxes_layout.load(num_classes=3, verify_images=False)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _elements(ds)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"split": "dev"}, "split"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": (3, 4, 5)}, "image_size"),
        ({"on_corrupt": "ignore"}, "on_corrupt"),
        ({"preprocess": 3}, "preprocess"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_classes": -1}, "num_classes"),
        ({"training": "yes"}, "training"),
        ({"cache": 1}, "cache"),
    ],
)
def test_argument_errors(boxes_layout, kwargs, argument):
    kwargs = {"split": "test", **kwargs}
    split = kwargs.pop("split")
    with pytest.raises(ValueError) as excinfo:
        load_wsol(boxes_layout.data_root, boxes_layout.metadata_root, split, **kwargs)
    message = _problem(excinfo)
    assert message.startswith(f"Invalid value received for argument `{argument}`.")
    assert "Received:" in message


def test_unknown_keyword_is_rejected(boxes_layout):
    with pytest.raises(TypeError):
        boxes_layout.load(num_classes=3, crop=True)


def test_table_and_inferred_class_count(tmp_path):
    assert wsol.WSOL_DATASETS == {
        "CUB": 200,
        "CARS": 196,
        "ILSVRC": 1000,
        "OpenImages": 100,
    }
    assert wsol.WSOL_LOCALIZATION["OpenImages"] == "masks"
    cub = WSOLLayout(tmp_path / "one", name="CUB")
    cub.boxes_dataset(BOX_ENTRIES)
    assert cub.read().num_classes == 200
    other = WSOLLayout(tmp_path / "two", name="mine")
    other.boxes_dataset(BOX_ENTRIES)
    assert other.read(num_classes=7).num_classes == 7
    with pytest.raises(ValueError) as excinfo:
        other.read()
    message = _problem(excinfo)
    assert message.startswith("Invalid value received for argument `num_classes`")
    assert "'mine'" in message and "Received: num_classes=None" in message
