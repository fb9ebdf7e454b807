"""Tests of the wsolevaluation format module: readers, cross-check, writer.

Expected values are written out by hand from the lines in each test.
"""

import dataclasses
import os

import numpy as np
import pytest
from helpers.data import BOX_ENTRIES, WSOLLayout, boxes_layout, mask_layout
from helpers.errors import raises_invalid

from keras_dualsig import datasets
from keras_dualsig.datasets import wsol_format as fmt
from keras_dualsig.datasets.wsol_format import Entry, WSOLRecord


def _file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------
# One reader per file


def test_read_image_ids(tmp_path):
    path = _file(tmp_path, "image_ids.txt", "a/1.jpg\n\nb/2.jpg\r\n")
    assert fmt.read_image_ids(path) == {"a/1.jpg": 1, "b/2.jpg": 3}


def test_read_class_labels(tmp_path):
    path = _file(tmp_path, "class_labels.txt", "a/1.jpg,0\nb/2.jpg, 7\n")
    assert fmt.read_class_labels(path) == {
        "a/1.jpg": Entry(0, 1),
        "b/2.jpg": Entry(7, 2),
    }


def test_read_image_sizes_is_height_first(tmp_path):
    # The file says <width>,<height>: 500 wide, 300 high.
    path = _file(tmp_path, "image_sizes.txt", "a/1.jpg,500,300\n")
    assert fmt.read_image_sizes(path) == {"a/1.jpg": Entry((300, 500), 1)}


def test_read_boxes_several_per_image(tmp_path):
    text = "a/1.jpg,156,163,318,230\na/1.jpg,23,12,101,259\nb/2.jpg,1,2,3,4\n"
    path = _file(tmp_path, "localization.txt", text)
    assert fmt.localization_kind(path) == "boxes"
    assert fmt.read_boxes(path) == {
        "a/1.jpg": [Entry((156, 163, 318, 230), 1), Entry((23, 12, 101, 259), 2)],
        "b/2.jpg": [Entry((1, 2, 3, 4), 3)],
    }


def test_read_mask_paths_ignore_on_first_line(tmp_path):
    text = "a.jpg,m/a1.png,m/a_ignore.png\na.jpg,m/a2.png,\nb.jpg,m/b1.png,\n"
    path = _file(tmp_path, "localization.txt", text)
    assert fmt.localization_kind(path) == "masks"
    masks, ignores = fmt.read_mask_paths(path)
    assert masks == {
        "a.jpg": [Entry("m/a1.png", 1), Entry("m/a2.png", 2)],
        "b.jpg": [Entry("m/b1.png", 3)],
    }
    assert ignores == {"a.jpg": Entry("m/a_ignore.png", 1), "b.jpg": Entry(None, 3)}


def test_a_reader_alone_raises_with_file_and_line(tmp_path):
    path = _file(tmp_path, "class_labels.txt", "a.jpg,0\nb.jpg\n")
    with pytest.raises(ValueError) as info:
        fmt.read_class_labels(path)
    message = str(info.value)
    assert f"Invalid WSOL metadata in {tmp_path}: 1 problem(s)." in message
    assert (
        "class_labels.txt, line 2: expected 2 fields <path>,<label>, got 1" in message
    )


def test_cross_check_alone():
    ids = {"a.jpg": 1, "b.jpg": 2}
    labels = {"a.jpg": Entry(0, 1), "b.jpg": Entry(3, 2), "c.jpg": Entry(0, 3)}
    sizes = {"a.jpg": Entry((10, 20), 1), "b.jpg": Entry((10, 20), 2)}
    boxes = {"a.jpg": [Entry((0, 0, 20, 10), 1)], "b.jpg": [Entry((0, 0, 21, 5), 2)]}
    with pytest.raises(ValueError) as info:
        fmt.cross_check(ids, labels, num_classes=3, sizes=sizes, boxes=boxes)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "class_labels.txt, line 2: label 3 of 'b.jpg' is outside [0, 3)" in message
    assert "class_labels.txt, line 3: label for 'c.jpg', which is not in" in message
    assert "localization.txt, line 2: box (x0=0, y0=0, x1=21, y1=5)" in message
    # (0, 0, 20, 10) reaches the border of the 10 x 20 image: accepted.
    fmt.cross_check(
        ids,
        {"a.jpg": Entry(0, 1), "b.jpg": Entry(1, 2)},
        num_classes=3,
        sizes=sizes,
        boxes={**boxes, "b.jpg": boxes["a.jpg"]},
    )


# ---------------------------------------------------------------------------
# Records and sizes


def test_record_size_keeps_the_file_order():
    record = WSOLRecord("a.jpg", "/d/a.jpg", 0, original_size=(300, 500))
    assert record.size == (500, 300)  # (width, height), as earlier versions
    assert WSOLRecord("a.jpg", "/d/a.jpg", 0).size is None


def test_boxes_at_hand_computed():
    # 500 wide, 375 high (a CUB test image) -> 224 x 224:
    # 60 * 224 / 500 = 26.88, 27 * 224 / 375 = 16.128, 385 * 224 / 500 = 172.48,
    # 331 * 224 / 375 = 197.71; truncated.
    record = WSOLRecord(
        "a.jpg", "/d/a.jpg", 0, original_size=(375, 500), boxes=((60, 27, 385, 331),)
    )
    np.testing.assert_array_equal(record.boxes_at((224, 224)), [[26, 16, 172, 197]])
    # A non-square target: 20 high, 25 wide from 40 high, 50 wide: scale 0.5.
    record = dataclasses.replace(
        record, original_size=(40, 50), boxes=((10, 5, 49, 39),)
    )
    np.testing.assert_array_equal(record.boxes_at((20, 25)), [[5, 2, 24, 19]])


def test_boxes_at_needs_the_original_size():
    record = WSOLRecord("a.jpg", "/d/a.jpg", 0, boxes=((1, 2, 3, 4),))
    with raises_invalid("record", "original_size"):
        record.boxes_at((224, 224))


# ---------------------------------------------------------------------------
# The writer


def _same_records(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert dataclasses.replace(a, line=0) == dataclasses.replace(b, line=0)


def test_writer_round_trips_boxes(tmp_path):
    layout = boxes_layout(tmp_path / "source")
    meta = layout.read(num_classes=3)
    written = datasets.write_wsol_metadata(tmp_path / "copy", "test", meta.records)
    assert sorted(os.path.basename(p) for p in written) == sorted(fmt.METADATA_FILES)
    again = datasets.read_wsol_metadata(
        layout.data_root, tmp_path / "copy", "test", num_classes=3
    )
    _same_records(meta.records, again.records)
    text = (tmp_path / "copy/test/image_sizes.txt").read_text()
    assert text == "a/0.png,50,40\na/1.jpg,30,30\nb/2.png,60,20\n"  # width first
    text = (tmp_path / "copy/test/localization.txt").read_text()
    assert text.splitlines()[:2] == ["a/0.png,10,5,49,39", "a/0.png,1,2,3,4"]


def test_writer_round_trips_masks(tmp_path):
    layout = mask_layout(tmp_path / "source")
    meta = layout.read()
    datasets.write_wsol_metadata(
        tmp_path / "copy", "test", meta.records, mask_root=layout.data_root
    )
    lines = (tmp_path / "copy/test/localization.txt").read_text().splitlines()
    assert lines == [
        "test/x/0.jpg,test/x/0_m_a.png,test/x/0_ignore.png",
        "test/x/0.jpg,test/x/0_m_b.png,",
        "test/x/1.png,test/x/1_m_a.png,",
    ]
    again = datasets.read_wsol_metadata(
        layout.data_root, tmp_path / "copy", "test", num_classes=100
    )
    _same_records(meta.records, again.records)


def _record(image_id="a.png", **fields):
    values = {"path": "", "label": 0, "original_size": (10, 20), "boxes": ()}
    return WSOLRecord(image_id, **{**values, **fields})


@pytest.mark.parametrize(
    "records, fragment",
    [
        ([_record("a,b.png")], "holds a comma"),
        ([_record(" a.png")], "surrounding spaces"),
        ([_record("/etc/a.png")], "is absolute"),
        ([_record("../a.png")], "climbs out"),
        ([_record(), _record()], "unique image ids"),
        ([_record(label=-1)], "integer labels >= 0"),
        ([_record(label=True)], "integer labels >= 0"),
        ([_record(boxes=((0, 0, 21, 10),))], "x1 <= width=20"),
        ([_record(boxes=((0, 0, 1.5, 1),))], "boxes of ints"),
        ([_record(original_size=None, boxes=((0, 0, 1, 1),))], "original_size"),
        ([_record(boxes=((0, 0, 1, 1),)), _record("b.png")], "same ground truth"),
        ([_record(mask_paths=("/elsewhere/m.png",))], "or a mask_root"),
        ([_record(ignore_path="i.png")], "an instance mask"),
        ([], "non-empty sequence"),
    ],
)
def test_writer_refuses_what_the_format_cannot_hold(tmp_path, records, fragment):
    with raises_invalid("records", fragment):
        datasets.write_wsol_metadata(tmp_path, "test", records)
    assert not (tmp_path / "test").exists()  # refused before writing


def test_writer_never_overwrites_unless_asked(tmp_path):
    first = [_record(boxes=((0, 0, 1, 1),))]
    datasets.write_wsol_metadata(tmp_path, "val", first)
    with raises_invalid("overwrite", "True to replace"):
        datasets.write_wsol_metadata(tmp_path, "val", [_record("b.png")])
    assert (tmp_path / "val/image_ids.txt").read_text() == "a.png\n"
    # With overwrite, a localization.txt the new records lack is removed rather
    # than left to pair with the new image list.
    datasets.write_wsol_metadata(tmp_path, "val", [_record("b.png")], overwrite=True)
    assert (tmp_path / "val/image_ids.txt").read_text() == "b.png\n"
    assert not (tmp_path / "val/localization.txt").exists()
    with raises_invalid("overwrite", "True or False"):
        datasets.write_wsol_metadata(tmp_path, "val", first, overwrite="yes")


def test_cluttered_mnist_metadata_comes_from_the_writer(tmp_path, monkeypatch):
    calls = []
    real = fmt.write_wsol_metadata

    def spy(metadata_root, split, records, **kwargs):
        calls.append((os.path.basename(metadata_root), split))
        return real(metadata_root, split, records, **kwargs)

    monkeypatch.setattr(fmt, "write_wsol_metadata", spy)
    datasets.cluttered_mnist(
        tmp_path / "cm", image_size=56, num_train=2, num_val=2, num_test=2
    )
    assert sorted(calls) == [
        ("boxes", "test"),
        ("boxes", "train"),
        ("boxes", "val"),
        ("first", "test"),  # The test_pairs split: one metadata root per digit.
        ("masks", "test"),
        ("masks", "val"),
        ("second", "test"),
    ]


def test_layout_helper_matches_the_reader(tmp_path):
    layout = WSOLLayout(tmp_path)
    layout.boxes_dataset(BOX_ENTRIES)
    sizes = [r.original_size for r in layout.read(num_classes=3).records]
    assert sizes == [entry[2] for entry in BOX_ENTRIES]
