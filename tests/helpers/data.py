"""Tiny datasets the tests write on disk, written once.

- `WSOLLayout`: a wsolevaluation-format split (real PNG/JPEG files written with
  OpenCV, plus the metadata text files) under a temporary folder.
- `BOX_ENTRIES`, `boxes_layout`, `mask_layout`, `crop_layout`: the layouts the
  dataset tests share.
- `SMALL_MNIST`, `small_mnist`: a cluttered MNIST build small enough for tests.

Example:
>>> from helpers.data import BOX_ENTRIES, WSOLLayout
>>> layout = WSOLLayout(tmp_path)
>>> layout.boxes_dataset(BOX_ENTRIES)
>>> meta = layout.read(num_classes=3)
"""

import cv2
import numpy as np

from keras_dualsig.datasets import cluttered_mnist, load_wsol, read_wsol_metadata

# (image_id, label, (height, width), box in original pixels); b/2.png's box
# reaches its right border (x1 = width), as boxes of Stanford Cars do.
BOX_ENTRIES = [
    ("a/0.png", 0, (40, 50), (10, 5, 49, 39)),
    ("a/1.jpg", 1, (30, 30), (0, 0, 29, 29)),
    ("b/2.png", 2, (20, 60), (3, 4, 60, 20)),
]

# A cluttered MNIST build of a few dozen images (builds in well under a second).
SMALL_MNIST = {"image_size": 64, "num_train": 40, "num_val": 10, "num_test": 30}


def random_image(height, width, seed=0):
    """uint8 (height, width, 3) noise, different for each seed."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


class WSOLLayout:
    """A tiny wsolevaluation-format dataset under `tmp_path`.

    ``data/`` holds the images (and masks), ``<name>/<split>/`` the text files.

    Args:
        tmp_path: a pathlib folder (pytest's ``tmp_path``).
        split: the split written.
        name: the metadata folder's name ("CUB", "CARS" and "OpenImages" give
            their class counts to `read_wsol_metadata`).
    """

    def __init__(self, tmp_path, split="test", name="meta"):
        self.data_root = tmp_path / "data"
        self.metadata_root = tmp_path / name
        self.split = split
        self.split_dir = self.metadata_root / split
        self.split_dir.mkdir(parents=True)
        self.data_root.mkdir(exist_ok=True)

    def image(self, image_id, array):
        """Writes `array` (BGR or grey, as OpenCV) as the file `image_id`."""
        path = self.data_root / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), array)
        return path

    def write(self, name, lines):
        """Writes one metadata file of the split, one line per entry."""
        (self.split_dir / name).write_text("".join(f"{line}\n" for line in lines))

    def boxes_dataset(self, entries, extra_boxes=()):
        """Writes images and all four files; `entries` as `BOX_ENTRIES`."""
        for index, (image_id, _, (height, width), _) in enumerate(entries):
            self.image(image_id, random_image(height, width, seed=index))
        self.write("image_ids.txt", [e[0] for e in entries])
        self.write("class_labels.txt", [f"{e[0]},{e[1]}" for e in entries])
        self.write("image_sizes.txt", [f"{e[0]},{e[2][1]},{e[2][0]}" for e in entries])
        boxes = [f"{e[0]},{','.join(map(str, e[3]))}" for e in entries]
        self.write("localization.txt", boxes + list(extra_boxes))

    def load(self, **kwargs):
        return load_wsol(self.data_root, self.metadata_root, self.split, **kwargs)

    def read(self, **kwargs):
        return read_wsol_metadata(
            self.data_root, self.metadata_root, self.split, **kwargs
        )


def boxes_layout(tmp_path):
    """`BOX_ENTRIES` plus a second box on a/0.png: (1, 2, 3, 4)."""
    layout = WSOLLayout(tmp_path)
    layout.boxes_dataset(BOX_ENTRIES, extra_boxes=["a/0.png,1,2,3,4"])
    return layout


def mask_layout(tmp_path, ignore_second_line=False):
    """An OpenImages-style split: two images, three instance masks, one ignore.

    Image test/x/0.jpg (40x60) has a left block (rows 10..29, cols 5..19, 255)
    and a right block (rows 20..34, cols 40..54, value 1) and an ignore mask
    over rows 0..14; test/x/1.png (30x30) has one block (rows 5..9, cols 5..9).
    """
    layout = WSOLLayout(tmp_path, name="OpenImages")
    layout.image("test/x/0.jpg", random_image(40, 60))
    layout.image("test/x/1.png", random_image(30, 30, seed=1))
    left = np.zeros((40, 60), np.uint8)
    left[10:30, 5:20] = 255
    right = np.zeros((40, 60), np.uint8)
    right[20:35, 40:55] = 1  # any non-zero value is foreground
    ignore = np.zeros((40, 60), np.uint8)
    ignore[0:15, :] = 255
    only = np.zeros((30, 30), np.uint8)
    only[5:10, 5:10] = 255
    layout.image("test/x/0_m_a.png", left)
    layout.image("test/x/0_m_b.png", right)
    layout.image("test/x/0_ignore.png", ignore)
    layout.image("test/x/1_m_a.png", only)
    layout.write("image_ids.txt", ["test/x/0.jpg", "test/x/1.png"])
    layout.write("class_labels.txt", ["test/x/0.jpg,4", "test/x/1.png,99"])
    later_ignore = "test/x/0_ignore.png" if ignore_second_line else ""
    layout.write(
        "localization.txt",
        [
            "test/x/0.jpg,test/x/0_m_a.png,test/x/0_ignore.png",
            f"test/x/0.jpg,test/x/0_m_b.png,{later_ignore}",
            "test/x/1.png,test/x/1_m_a.png,",
        ],
    )
    return layout


def crop_layout(tmp_path):
    """A train split of one 40x40 image whose every pixel is distinct.

    Returns:
        ``(layout, image)``: the layout and the RGB uint8 (40, 40, 3) image,
        whose pixel (y, x) is (6y, 6x, 3(y + x)), so a crop pins its offset.
    """
    layout = WSOLLayout(tmp_path, split="train")
    y, x = np.mgrid[0:40, 0:40]
    image = np.stack([y * 6, x * 6, (y + x) * 3], axis=-1).astype(np.uint8)
    layout.image("img.png", image[..., ::-1])  # cv2 writes BGR
    layout.write("image_ids.txt", ["img.png"])
    layout.write("class_labels.txt", ["img.png,1"])
    return layout, image


def small_mnist(root, **overrides):
    """`cluttered_mnist` at `SMALL_MNIST` sizes (overridable) under `root`."""
    return cluttered_mnist(root, **{**SMALL_MNIST, **overrides})
