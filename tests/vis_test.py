import matplotlib
import numpy as np
import pytest

from keras_dualsig import vis


def test_overlay_pixel_values_by_hand():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, 0] = (200, 100, 0)
    cam = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    out = vis.overlay(image, cam, alpha=0.25, colormap="gray")
    # gray colormap: value v -> (v, v, v) * 255.
    heat = np.round(cam * 255.0)
    expected = np.round(0.75 * image.astype(float) + 0.25 * heat[..., None])
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)


def test_overlay_jet_endpoints_and_alpha_one():
    image = np.full((1, 2), 0.5, np.float32)
    cam = np.array([[0.0, 1.0]], np.float32)
    out = vis.overlay(image, cam, alpha=1.0)
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_array_equal(out[0, 0], np.round(np.array(jet(0.0)[:3]) * 255))
    np.testing.assert_array_equal(out[0, 1], np.round(np.array(jet(1.0)[:3]) * 255))
    assert out[0, 0, 2] > out[0, 0, 0]  # low values are blue
    assert out[0, 1, 0] > out[0, 1, 2]  # high values are red


def test_overlay_resizes_map_and_alpha_zero_keeps_image():
    image = np.random.default_rng(0).random((8, 6, 3)).astype(np.float32)
    out = vis.overlay(image, np.ones((2, 3), np.float32), alpha=0.0)
    np.testing.assert_array_equal(out, np.round(image * 255).astype(np.uint8))


def test_draw_boxes_inclusive_corners():
    image = np.zeros((10, 10, 3), np.uint8)
    out = vis.draw_boxes(image, [[2, 3, 6, 7]], color=(255, 0, 0))
    red = np.all(out == (255, 0, 0), axis=-1)
    assert red[3, 2] and red[7, 6] and red[3, 6] and red[7, 2]
    assert not red[5, 4]  # inside stays empty
    assert not red[2, 2] and not red[8, 6]
    assert image.sum() == 0  # input not modified


def test_compare_renders_headless(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((3, 16, 16, 3)).astype(np.float32)
    maps = {"softmax": rng.random((3, 4, 4)), "sigmoid": rng.random((3, 16, 16))}
    figure = vis.compare(
        images,
        maps,
        boxes={"sigmoid": [np.array([[1, 1, 5, 5]])] * 3},
        gt_boxes=[np.array([[0, 0, 8, 8]])] * 3,
        captions=["a", "b", "c"],
    )
    assert len(figure.axes) == 9
    assert figure.axes[0].get_title() == "a"
    assert figure.axes[1].get_title() == "softmax"
    path = tmp_path / "compare.png"
    figure.savefig(path)
    assert path.stat().st_size > 1000


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"argument `cam`.*\[0, 1\]"):
        vis.overlay(np.zeros((4, 4, 3)), np.full((4, 4), 2.0))
    with pytest.raises(ValueError, match=r"argument `alpha`.*alpha=1.5"):
        vis.overlay(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ValueError, match=r"argument `image`"):
        vis.overlay(np.zeros((4, 4, 2)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"argument `colormap`.*nope"):
        vis.overlay(np.zeros((4, 4, 3)), np.zeros((4, 4)), colormap="nope")
    with pytest.raises(ValueError, match=r"argument `boxes`"):
        vis.draw_boxes(np.zeros((4, 4, 3)), [[3, 0, 1, 2]])
    with pytest.raises(ValueError, match=r"argument `maps_by_title`.*2 maps"):
        vis.compare(np.zeros((3, 4, 4)), {"x": np.zeros((2, 4, 4))})
