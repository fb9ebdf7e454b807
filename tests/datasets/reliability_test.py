"""No silent failure in the datasets: unusual inputs read right or are refused.

Each test pins one case that earlier versions got wrong (a wrong result, or an
error that did not say what was wrong), unless its docstring says it pins
behaviour that was already right.
"""

import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf
from helpers.data import (
    BOX_ENTRIES,
    WSOLLayout,
    boxes_layout,
    crop_layout,
    mask_layout,
    random_image,
    small_mnist,
)
from helpers.errors import raises_invalid

from keras_dualsig import datasets
from keras_dualsig.datasets import _image_io

TINY_MNIST = {"image_size": 56, "num_train": 4, "num_val": 2, "num_test": 2}

# ---------------------------------------------------------------------------
# Ground-truth boxes: exactly as wsolevaluation


def _wsolevaluation_resize_bbox(box, image_size, resize_size):
    """wsolevaluation's evaluation.resize_bbox, re-derived: sizes width first."""
    (w, h), (new_w, new_h) = image_size, resize_size
    x0, y0, x1, y1 = (float(c) for c in box)
    return (
        int(x0 * new_w / w),
        int(y0 * new_h / h),
        int(x1 * new_w / w),
        int(y1 * new_h / h),
    )


def test_cars_border_boxes_are_truncated_not_clipped(tmp_path):
    """Pins behaviour that was already right: boxes touching the border.

    Stanford Cars boxes may end on the image border (x1 = width: 352 of the
    8,041 test images); wsolevaluation rescales them with int() and never
    clips, so they end at 224 on a 224-pixel map.
    """
    layout = WSOLLayout(tmp_path, name="CARS")
    entries = [
        ("c/00001.jpg", 12, (300, 500), (0, 0, 500, 300)),
        ("c/00002.jpg", 195, (183, 275), (10, 20, 275, 183)),
        ("c/00003.jpg", 7, (480, 640), (33, 0, 640, 479)),
    ]
    layout.boxes_dataset(entries)
    elements = list(layout.load(batch_size=None).as_numpy_iterator())
    assert [e["label"] for e in elements] == [12, 195, 7]  # 196 classes (CARS)
    for element, (_, _, (height, width), box) in zip(elements, entries, strict=True):
        expected = _wsolevaluation_resize_bbox(box, (width, height), (224, 224))
        np.testing.assert_array_equal(element["boxes"][0], expected)
    # Hand values: 500 -> 224 and 300 -> 224 exactly; 20 * 224 / 183 = 24.48.
    np.testing.assert_array_equal(elements[0]["boxes"][0], [0, 0, 224, 224])
    np.testing.assert_array_equal(elements[1]["boxes"][0], [8, 24, 224, 224])
    np.testing.assert_array_equal(elements[2]["boxes"][0], [11, 0, 224, 223])
    assert datasets.rescale_boxes(
        [[0, 0, 500, 300]], (500, 300), (224, 224)
    ).tolist() == [[0, 0, 224, 224]]


# ---------------------------------------------------------------------------
# Metadata text


def _prepend_bom(path):
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


@pytest.mark.parametrize("name", ["image_ids.txt", "class_labels.txt"])
def test_byte_order_mark_reads_correctly(tmp_path, name):
    layout = boxes_layout(tmp_path)
    _prepend_bom(layout.split_dir / name)
    records = layout.read(num_classes=3).records
    assert [r.image_id for r in records] == [e[0] for e in BOX_ENTRIES]


def test_leading_spaces_read_correctly(tmp_path):
    """Pins behaviour that was already right: spaces around fields."""
    layout = boxes_layout(tmp_path)
    layout.write("image_ids.txt", [f" {e[0]}" for e in BOX_ENTRIES])
    layout.write("class_labels.txt", [f" {e[0]}, {e[1]}" for e in BOX_ENTRIES])
    assert [r.label for r in layout.read(num_classes=3).records] == [0, 1, 2]


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\ufeff"])
def test_control_character_in_a_path_is_named(tmp_path, char):
    layout = boxes_layout(tmp_path)
    layout.write("image_ids.txt", ["a/0.png", f"a/1{char}.jpg", "b/2.png"])
    with pytest.raises(ValueError) as info:
        layout.read(num_classes=3)
    image_id = f"a/1{char}.jpg"
    expected = (
        f"image_ids.txt, line 2: image_id {image_id!r} contains the control "
        f"character U+{ord(char):04X}"
    )
    assert expected in str(info.value)


def test_line_numbers_count_newlines_only(tmp_path):
    # A form feed is not a line end for editors (nor for wsolevaluation, which
    # splits on "\n"); str.splitlines() would shift every later line number.
    layout = boxes_layout(tmp_path)
    layout.write("image_ids.txt", ["a/0.png", "a/1.jpg\x0c", "missing.png"])
    with pytest.raises(ValueError) as info:
        layout.read(num_classes=3, with_localization=False)
    assert "image_ids.txt, line 3: image 'missing.png' not found" in str(info.value)


@pytest.mark.parametrize("label", ["1_0", "\u0663", "\uff11"])
def test_labels_that_int_would_accept_are_refused(tmp_path, label):
    # int("1_0") == 10, int("\u0663") == 3 (Arabic-Indic three): typos, not labels.
    layout = boxes_layout(tmp_path)
    layout.write("class_labels.txt", [f"a/0.png,{label}", "a/1.jpg,1", "b/2.png,2"])
    with pytest.raises(ValueError) as info:
        layout.read(num_classes=11)
    assert f"class_labels.txt, line 1: label {label!r} is not an integer" in str(
        info.value
    )


def test_split_folder_passed_as_metadata_root_gets_a_hint(tmp_path):
    layout = boxes_layout(tmp_path)
    with pytest.raises(ValueError, match="looks like a split folder; pass its parent"):
        datasets.read_wsol_metadata(
            layout.data_root, layout.split_dir, "test", num_classes=3
        )


# ---------------------------------------------------------------------------
# Files on disk


def test_symlink_out_of_data_root_is_refused(tmp_path):
    layout = boxes_layout(tmp_path / "set")
    outside = tmp_path / "elsewhere.png"
    cv2.imwrite(str(outside), random_image(8, 8))
    os.symlink("/etc/passwd", layout.data_root / "passwd.png")
    os.symlink(outside, layout.data_root / "a" / "linked.png")
    ids = [e[0] for e in BOX_ENTRIES] + ["passwd.png", "a/linked.png"]
    os.remove(layout.split_dir / "image_sizes.txt")
    layout.write("image_ids.txt", ids)
    layout.write("class_labels.txt", [f"{image_id},0" for image_id in ids])
    with pytest.raises(ValueError) as info:
        layout.read(num_classes=3, with_localization=False)
    message = str(info.value)
    assert (
        "image_ids.txt, line 4: image 'passwd.png' resolves to /etc/passwd" in message
    )
    assert f"resolves to {outside}, outside data_root" in message
    assert "allow_outside_root=True" in message
    # Opting in reads the linked image (the link to /etc/passwd then fails to
    # decode, with the reason).
    layout.write("image_ids.txt", ids[:3] + ids[4:])
    layout.write(
        "class_labels.txt", [f"{image_id},0" for image_id in ids[:3] + ids[4:]]
    )
    meta = layout.read(num_classes=3, with_localization=False, allow_outside_root=True)
    assert meta.records[-1].image_id == "a/linked.png"


def test_linked_data_root_and_links_inside_it_are_fine(tmp_path):
    """Pins behaviour that was already right: links that stay inside the root."""
    layout = boxes_layout(tmp_path / "real")
    os.symlink(layout.data_root, tmp_path / "linked_data")
    os.symlink(layout.data_root / "a" / "0.png", layout.data_root / "alias.png")
    os.remove(layout.split_dir / "image_sizes.txt")
    layout.write("image_ids.txt", [e[0] for e in BOX_ENTRIES] + ["alias.png"])
    layout.write(
        "class_labels.txt", [f"{e[0]},{e[1]}" for e in BOX_ENTRIES] + ["alias.png,0"]
    )
    meta = datasets.read_wsol_metadata(
        tmp_path / "linked_data",
        layout.metadata_root,
        "test",
        num_classes=3,
        with_localization=False,
    )
    assert len(meta) == 4


def test_mask_symlink_out_of_mask_root_is_refused(tmp_path):
    layout = mask_layout(tmp_path / "set")
    target = layout.data_root / "test/x/0_m_b.png"
    moved = tmp_path / "outside_mask.png"
    os.rename(target, moved)
    os.symlink(moved, target)
    with pytest.raises(ValueError, match=r"localization.txt, line 2: mask .*outside"):
        layout.read()


def test_folder_named_like_an_image_is_reported_as_such(tmp_path):
    layout = boxes_layout(tmp_path)
    (layout.data_root / "d.png").mkdir()
    layout.write("image_ids.txt", ["d.png"])
    layout.write("class_labels.txt", ["d.png,0"])
    with pytest.raises(ValueError, match=r"image 'd.png' at .*d.png is not a file"):
        layout.read(num_classes=3, with_localization=False)


# ---------------------------------------------------------------------------
# The pixel limit


def _png_header_only(height, width):
    """The signature and IHDR chunk of a PNG of (height, width), no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


@pytest.mark.parametrize(
    "extension, flags",
    [
        (".png", []),
        (".jpg", []),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless (VP8L)
    ],
)
@pytest.mark.parametrize("size", [(37, 91), (300, 17)])
def test_header_size_matches_the_decoder(extension, flags, size):
    ok, encoded = cv2.imencode(extension, random_image(*size), flags)
    assert ok
    contents = tf.constant(encoded.tobytes())
    decoded = tf.io.decode_image(contents, channels=3, expand_animations=False)
    assert tuple(_image_io.header_size(contents).numpy()) == tuple(decoded.shape[:2])
    assert tuple(decoded.shape[:2]) == size


def test_header_size_of_gif_and_unknown_formats():
    PIL = pytest.importorskip("PIL.Image")
    import io

    buffer = io.BytesIO()
    PIL.fromarray(random_image(23, 41)).save(buffer, format="GIF")
    contents = tf.constant(buffer.getvalue())
    assert tuple(_image_io.header_size(contents).numpy()) == (23, 41)
    assert tuple(_image_io.header_size(tf.constant(b"\x00" * 5)).numpy()) == (-1, -1)


def test_image_above_the_default_limit_is_refused_before_decoding(tmp_path):
    layout = boxes_layout(tmp_path)
    # 20,000 x 10,000 = 200 million pixels (> 178,956,970): a bomb of 33 bytes.
    (layout.data_root / "a/1.jpg").write_bytes(_png_header_only(10_000, 20_000))
    layout.write(
        "image_sizes.txt", ["a/0.png,50,40", "a/1.jpg,20000,10000", "b/2.png,60,20"]
    )
    with pytest.raises(ValueError) as info:
        layout.load(num_classes=3)
    message = str(info.value)
    assert "image_ids.txt, line 2: cannot decode image 'a/1.jpg'" in message
    assert (
        "10000x20000 (height x width) = 200,000,000 pixels (declared by its "
        "header; not decoded) is more than max_pixels=178,956,970" in message
    )


def test_max_pixels_is_configurable(tmp_path, caplog):
    layout = boxes_layout(tmp_path)  # a/0.png is 40 x 50 = 2,000 pixels
    with pytest.raises(ValueError, match=r"a/0.png.*2,000 pixels.*max_pixels=1,999"):
        layout.load(num_classes=3, max_pixels=1999)
    ds, info = layout.load(
        num_classes=3, max_pixels=1999, on_corrupt="skip", with_info=True
    )
    assert [e["image_id"] for e in ds.as_numpy_iterator()] == [b"a/1.jpg", b"b/2.png"]
    assert "max_pixels" in info.skipped[0][1]
    assert len(list(layout.load(num_classes=3, max_pixels=None))) == 3
    with raises_invalid("max_pixels", "positive int"):
        layout.load(num_classes=3, max_pixels=0)


def test_max_pixels_holds_inside_the_pipeline(tmp_path):
    layout = boxes_layout(tmp_path)
    ds = layout.load(num_classes=3, max_pixels=1999, verify_images=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=1999"):
        list(ds.as_numpy_iterator())


def test_mask_above_the_limit_is_refused(tmp_path):
    layout = mask_layout(tmp_path)  # image 0 is 40 x 60; its mask b now 80 x 120
    cv2.imwrite(
        str(layout.data_root / "test/x/0_m_b.png"), np.ones((80, 120), np.uint8)
    )
    with pytest.raises(
        ValueError, match=r"localization.txt, line 2: cannot decode mask .*9,600 pixels"
    ):
        layout.load(max_pixels=40 * 60, verify_images=True)


# ---------------------------------------------------------------------------
# Arguments


# with_localization=1 / "no" and shuffle=0 used to pass (1 == True); the
# other cases were refused already and are pinned here with them.
@pytest.mark.parametrize(
    "argument, value",
    [
        ("with_localization", 1),
        ("with_localization", "no"),
        ("shuffle", 0),
        ("shuffle", "no"),
        ("training", "no"),
        ("as_supervised", 1),
        ("drop_remainder", "False"),
        ("verify_images", 0),
        ("with_info", "no"),
        ("allow_outside_root", "no"),
    ],
)
def test_boolean_options_refuse_non_bools(tmp_path, argument, value):
    layout = boxes_layout(tmp_path)
    with raises_invalid(argument, "True or False"):
        layout.load(num_classes=3, **{argument: value})


def test_numpy_bools_are_bools(tmp_path):
    """NumPy bools used to be refused by the isinstance(bool) checks."""
    layout, _ = crop_layout(tmp_path)
    ds = layout.load(num_classes=2, training=np.True_, verify_images=np.False_)
    assert len(list(ds)) == 1


def test_read_options_refuse_non_bools(tmp_path):
    """Pins behaviour that was already right for read_wsol_metadata."""
    layout = boxes_layout(tmp_path)
    for argument in ("verify_images", "allow_outside_root", "with_localization"):
        with raises_invalid(argument, "True or False"):
            layout.read(num_classes=3, **{argument: "no"})


def test_empty_cache_path_is_refused(tmp_path):
    # "" used to mean "no cache" silently.
    with raises_invalid("cache", "non-empty file path"):
        boxes_layout(tmp_path).load(num_classes=3, cache="")


@pytest.mark.parametrize("seed", [2**63 - 1, 2**63, 2**64, -(2**63) - 1])
def test_seed_outside_int64_is_refused(tmp_path, seed):
    with raises_invalid("seed", "2**63"):
        boxes_layout(tmp_path).load(num_classes=3, training=True, seed=seed)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("data_root", None),
        ("metadata_root", None),
        ("metadata_root", ""),
        ("mask_root", 5),
    ],
)
def test_roots_that_are_not_paths_are_refused(tmp_path, argument, value):
    """None and "" used to fail with a TypeError or read the current folder;
    mask_root=5 was refused already."""
    layout = boxes_layout(tmp_path)
    kwargs = {
        "data_root": layout.data_root,
        "metadata_root": layout.metadata_root,
        "split": "test",
        "num_classes": 3,
        argument: value,
    }
    with raises_invalid(argument, "folder path"):
        datasets.load_wsol(**kwargs)


def test_read_mask_errors_use_the_template(tmp_path):
    layout = mask_layout(tmp_path)
    record = layout.read().records[0]
    with raises_invalid("record", "mask_paths"):
        datasets.read_mask(record.__class__("a.jpg", "/a.jpg", 0))
    (layout.data_root / "test/x/0_m_a.png").write_bytes(b"broken")
    with raises_invalid("record", "OpenCV can read"):
        datasets.read_mask(record, size=(30, 20))


# ---------------------------------------------------------------------------
# cluttered_mnist never deletes what it did not write


def test_rebuild_with_another_seed_keeps_foreign_files(tmp_path):
    root = tmp_path / "cm"
    small_mnist(root, **TINY_MNIST)
    (root / "my_model.keras").write_text("weeks of training")
    (root / "data" / "notes.txt").write_text("mine")
    with raises_invalid("root", "only the files that build wrote") as info:
        small_mnist(root, seed=1, **TINY_MNIST)
    assert "my_model.keras" in str(info.value) and "data/notes.txt" in str(info.value)
    assert (root / "my_model.keras").read_text() == "weeks of training"
    assert (root / "data" / "notes.txt").read_text() == "mine"
    assert json.loads((root / "keras_dualsig_dataset.json").read_text())["seed"] == 0
    # Without the foreign files the outdated build is replaced.
    os.remove(root / "my_model.keras")
    os.remove(root / "data" / "notes.txt")
    assert small_mnist(root, seed=1, **TINY_MNIST).seed == 1
    assert sorted(os.listdir(tmp_path)) == ["cm"]


def test_folder_with_a_foreign_marker_is_untouched(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "keras_dualsig_dataset.json").write_text("{}")
    (root / "thesis.tex").write_text("keep")
    with raises_invalid("root", "cluttered_mnist()"):
        small_mnist(root, **TINY_MNIST)
    assert sorted(os.listdir(root)) == ["keras_dualsig_dataset.json", "thesis.tex"]


def test_only_its_own_stale_folders_are_cleaned(tmp_path):
    look_alike = tmp_path / ".cm.old-mine"
    stale = tmp_path / f".cm.building-12-{'0' * 32}"
    for folder in (look_alike, stale):
        folder.mkdir()
        (folder / "file.txt").write_text("x")
        os.utime(folder, (0, 0))
    small_mnist(tmp_path / "cm", **TINY_MNIST)
    assert sorted(os.listdir(tmp_path)) == [".cm.old-mine", "cm"]


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("keep")
    with raises_invalid("root", "cluttered_mnist()", "not a folder"):
        small_mnist(tmp_path / "a_file", **TINY_MNIST)
    assert (tmp_path / "a_file").read_text() == "keep"
    with raises_invalid("root", "folder path"):
        small_mnist(5, **TINY_MNIST)


def test_masks_of_the_train_split_are_refused_clearly(tmp_path):
    info = small_mnist(tmp_path / "cm", **TINY_MNIST)
    with raises_invalid("split", "the train split has no masks"):
        info.load("train", localization="masks")
    with raises_invalid("localization", '"boxes", "masks"'):
        info.load("test", localization=None)
