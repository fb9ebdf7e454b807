"""Tests for `kd.metrics.CAMEvaluation`: the protocol, recomputed in NumPy.

A tiny classifier is trained on 16x16 images of one bright square whose
position gives the class, then its sigmoid branch. The expected results are
computed independently of the object under test: predictions from
`model.predict`, maps from fresh CAM objects, box metrics from the
threshold-by-threshold reference (tests/helpers/wsol_reference.py), PxAP from
wsolevaluation's mask evaluation, and Average Drop / Increase in Confidence
from `model.predict` on the explanation images. One batch has labels the
model gets wrong, and boxes padded as `kd.datasets.load_wsol` pads them,
some ending at x1 = width.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.wsol_reference import (
    THRESHOLDS,
    ReferenceBoxEvaluator,
    ReferenceMaskEvaluator,
    coded_mask,
)

import keras_dualsig as kd
from keras_dualsig.metrics import CAMEvaluation

SIZE, CLASSES = 16, 3
METHODS = ("gradcam", "scorecam")
CAM_OPTIONS = {"scorecam": {"max_channels": 4}}
# Square corners (x0, y0) per class; class 2 touches the right border.
CORNERS = {0: (1, 1), 1: (2, 9), 2: (10, 4)}
SQUARE = 6


def make_data(rng, labels):
    """Images, inclusive boxes and masks of one square per image, at SIZE."""
    images = rng.normal(0.0, 0.1, (len(labels), SIZE, SIZE, 3)).astype(np.float32)
    boxes, masks = [], np.zeros((len(labels), SIZE, SIZE), bool)
    for index, label in enumerate(labels):
        x0, y0 = CORNERS[int(label)]
        images[index, y0 : y0 + SQUARE, x0 : x0 + SQUARE] += 1.0
        masks[index, y0 : y0 + SQUARE, x0 : x0 + SQUARE] = True
        # As wsolevaluation rescales a box touching the border: x1 = width.
        x1 = SIZE if x0 + SQUARE >= SIZE else x0 + SQUARE - 1
        boxes.append([[x0, y0, x1, y0 + SQUARE - 1]])
    return images, boxes, masks


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="feat")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    classifier = keras.Model(inputs, outputs, name="tiny")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, 96)
    images, _, _ = make_data(rng, labels)
    classifier.compile(
        optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy"
    )
    classifier.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    model = kd.dual_sigmoid(classifier, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    model.fit(images, labels, epochs=8, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def batches(dual):
    """Two batches: (images, labels, boxes, masks, ignore); the first mislabelled."""
    rng = np.random.default_rng(1)
    out = []
    for size, mislabel in ((7, True), (5, False)):
        true = rng.integers(0, CLASSES, size)
        images, boxes, masks = make_data(rng, true)
        labels = true.copy()
        if mislabel:
            predicted = dual.predict(images, verbose=0)["softmax"].argmax(-1)
            labels[:3] = (predicted[:3] + 1) % CLASSES  # k* != label for these.
            # Their GT box is where the label's Grad-CAM (sigmoid branch) puts
            # it at threshold 0.2, so GT-known Loc counts them and Top-1 Loc,
            # which also needs k* == label, must not.
            gt_maps = kd.cams.GradCAM(dual)(images[:3], labels[:3])
            for index in range(3):
                boxes[index] = kd.metrics.cam_to_boxes(gt_maps[index], 0.2).tolist()
            boxes[1] = [boxes[1][0], [0, 0, SIZE, 2]]  # Two boxes for image 1.
        ignore = rng.random((size, SIZE, SIZE)) < 0.1
        out.append((images, labels, [np.array(b) for b in boxes], masks, ignore))
    return out


def padded(boxes):
    """Boxes as load_wsol batches them: (B, max_boxes, 4) float, -1 rows."""
    rows = max(len(b) for b in boxes)
    array = np.full((len(boxes), rows, 4), -1.0, np.float32)
    for index, image_boxes in enumerate(boxes):
        array[index, : len(image_boxes)] = image_boxes
    return array, np.array([len(b) for b in boxes], np.int32)


def numpy_pointing(scoremap, boxes):
    """Hit (a maximum inside a box, constant maps miss) and energy share."""
    inside = np.zeros(scoremap.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0 : y1 + 1, x0 : x1 + 1] = True  # Slicing clips x1 = width.
    top = scoremap == scoremap.max()
    hit = bool((top & inside).any()) and scoremap.min() < scoremap.max()
    total = float(scoremap.astype(np.float64).sum())
    energy = float(scoremap[inside].astype(np.float64).sum()) / total if total else 0.0
    return hit, energy


def expected_results(dual, batches, branches=("softmax", "sigmoid")):
    """The protocol recomputed with independent pieces (see the module doc)."""
    cams = {m: kd.cams.get(m)(dual, **CAM_OPTIONS.get(m, {})) for m in METHODS}
    boxes_ref = {
        (m, b): ReferenceBoxEvaluator(THRESHOLDS) for m in METHODS for b in branches
    }
    masks_ref = {(m, b): ReferenceMaskEvaluator() for m in METHODS for b in branches}
    drops = {key: [] for key in boxes_ref}
    increases = {key: [] for key in boxes_ref}
    gains = {key: [] for key in boxes_ref}
    pointing = {key: [] for key in boxes_ref}
    correct = {b: [] for b in branches}
    for images, labels, boxes, masks, ignore in batches:
        outputs = dual.predict(images, verbose=0)
        k = outputs["softmax"].argmax(-1)
        rows = np.arange(len(labels))
        y = outputs["softmax"].astype(np.float64)[rows, k]
        for branch in branches:
            correct[branch].append(outputs[branch].argmax(-1) == labels)
        for method in METHODS:
            for branch in branches:
                key = (method, branch)
                gt_maps = cams[method](images, labels, branch=branch)
                boxes_ref[key].update(gt_maps, boxes, k == labels)
                pointing[key] += [
                    numpy_pointing(m, b) for m, b in zip(gt_maps, boxes, strict=True)
                ]
                for scoremap, mask, skip in zip(gt_maps, masks, ignore, strict=True):
                    masks_ref[key].accumulate(scoremap, coded_mask(mask, skip))
                k_maps = cams[method](images, k, branch=branch)
                explained = dual.predict(images * k_maps[..., None], verbose=0)
                o = explained["softmax"].astype(np.float64)[rows, k]
                drops[key].append(np.maximum(0, y - o) / y)
                increases[key].append(o > y)
                gains[key].append(np.maximum(0, o - y) / (1 - y))
    results = {
        "num_images": sum(len(b[1]) for b in batches),
        "top1_cls": {b: 100 * np.concatenate(correct[b]).mean() for b in branches},
        "methods": {},
    }
    for method in METHODS:
        results["methods"][method] = {}
        for branch in branches:
            key = (method, branch)
            box = boxes_ref[key].result()
            results["methods"][method][branch] = {
                "Top-1 Loc": box["Top-1 Loc"],
                "GT-known Loc": box["GT-known Loc"],
                "MaxBoxAccV2": box["MaxBoxAccV2"],
                "Pointing game": 100 * np.mean([h for h, _ in pointing[key]]),
                "Energy pointing game": 100 * np.mean([e for _, e in pointing[key]]),
                "PxAP": masks_ref[key].result(),
                "Average Drop": 100 * np.concatenate(drops[key]).mean(),
                "Increase in Confidence": 100 * np.concatenate(increases[key]).mean(),
                "Average Gain": 100 * np.concatenate(gains[key]).mean(),
            }
    return results


def assert_results_match(actual, expected):
    assert list(actual) == ["num_images", "top1_cls", "methods"]
    assert actual["num_images"] == expected["num_images"]
    assert actual["top1_cls"] == pytest.approx(expected["top1_cls"])
    assert list(actual["methods"]) == list(expected["methods"])
    for method, by_branch in expected["methods"].items():
        assert list(actual["methods"][method]) == list(by_branch)
        for branch, metrics in by_branch.items():
            got = actual["methods"][method][branch]
            assert list(got) == list(metrics), (method, branch)
            for name, value in metrics.items():
                assert isinstance(got[name], float)
                if name in (
                    "Average Drop",
                    "Increase in Confidence",
                    "Average Gain",
                    "Energy pointing game",
                ):
                    assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-6)
                else:  # Same maps, exact counting: equal to the last bit.
                    assert got[name] == value, (method, branch, name)


def test_matches_the_numpy_protocol(dual, batches):
    evaluation = CAMEvaluation(dual, METHODS, cam_options=CAM_OPTIONS)
    (images, labels, boxes, masks, ignore), second = batches
    predicted = dual.predict(images, verbose=0)["softmax"].argmax(-1)
    assert (predicted != labels).sum() >= 3  # The mislabelled batch.
    assert any((b[:, 2] == SIZE).any() for b in boxes)  # x1 = width boxes.
    padded_boxes, num_boxes = padded(boxes)
    assert (padded_boxes == -1).any()
    maps = evaluation.update(
        images,
        labels,
        boxes=padded_boxes,
        num_boxes=num_boxes,
        masks=masks,
        ignore=ignore,
    )
    # The returned maps are those of the ground-truth class.
    fresh = kd.cams.GradCAM(dual)
    for branch in ("softmax", "sigmoid"):
        np.testing.assert_array_equal(
            maps["gradcam"][branch], fresh(images, labels, branch=branch)
        )
    assert list(maps) == list(METHODS)
    # The second batch: boxes as a list, tensors for images and labels.
    images2, labels2, boxes2, masks2, ignore2 = second
    evaluation.update(
        keras.ops.convert_to_tensor(images2),
        keras.ops.convert_to_tensor(labels2),
        boxes=boxes2,
        masks=masks2,
        ignore=ignore2,
    )
    expected = expected_results(dual, batches)
    sigmoid_gradcam = expected["methods"]["gradcam"]["sigmoid"]
    assert sigmoid_gradcam["Top-1 Loc"] < sigmoid_gradcam["GT-known Loc"]
    assert_results_match(evaluation.result(), expected)


def test_streaming_and_reset(dual, batches):
    (images, labels, boxes, _, _), (images2, labels2, boxes2, _, _) = batches
    streamed = CAMEvaluation(dual, ["gradcam"])
    streamed.update(images, labels, boxes=boxes)
    streamed.update(images2, labels2, boxes=boxes2)
    whole = CAMEvaluation(dual, ["gradcam"])
    whole.update(
        np.concatenate([images, images2]),
        np.concatenate([labels, labels2]),
        boxes=boxes + boxes2,
    )
    a, b = streamed.result(), whole.result()
    assert a["num_images"] == b["num_images"] == 12
    assert a["top1_cls"] == b["top1_cls"]
    for branch in ("softmax", "sigmoid"):
        assert a["methods"]["gradcam"][branch] == pytest.approx(
            b["methods"]["gradcam"][branch], rel=1e-5
        )
    # Boxes only: no PxAP key, as evaluate.py on a box data set.
    assert list(a["methods"]["gradcam"]["sigmoid"]) == [
        "Top-1 Loc",
        "GT-known Loc",
        "MaxBoxAccV2",
        "Pointing game",
        "Energy pointing game",
        "Average Drop",
        "Increase in Confidence",
        "Average Gain",
    ]
    streamed.reset()
    empty = streamed.result()
    assert empty["num_images"] == 0
    assert np.isnan(empty["top1_cls"]["sigmoid"])
    assert list(empty["methods"]["gradcam"]["softmax"]) == [
        "Average Drop",
        "Increase in Confidence",
        "Average Gain",
    ]
    # After a reset, boxes may be left out.
    streamed.update(images, labels)
    assert "MaxBoxAccV2" not in streamed.result()["methods"]["gradcam"]["softmax"]


def test_box_options_and_accuracy_curves(dual, batches):
    images, labels, boxes, _, _ = batches[0]
    evaluation = CAMEvaluation(
        dual, ["gradcam"], branches=("sigmoid",), box_options={"gt_box_mode": "first"}
    )
    maps = evaluation.update(images, labels, boxes=boxes)["gradcam"]["sigmoid"]
    reference = ReferenceBoxEvaluator(THRESHOLDS, gt_box_mode="first")
    predicted = dual.predict(images, verbose=0)["softmax"].argmax(-1)
    reference.update(maps, boxes, predicted == labels)
    evaluator = evaluation.box_evaluators["gradcam", "sigmoid"]
    assert evaluator.result() == reference.result()
    curves = evaluator.accuracy_curves()
    np.testing.assert_array_equal(curves["BoxAcc@50"], reference.curves()["BoxAcc@50"])
    assert list(evaluation.result()["top1_cls"]) == ["sigmoid"]


def test_plain_classifier_softmax_branch(dual, batches):
    images, labels, boxes, _, _ = batches[1]
    plain = kd.small_cnn(CLASSES, (SIZE, SIZE, 3), width=4)
    evaluation = CAMEvaluation(plain, ["gradcam"], branches=("softmax",))
    evaluation.update(images, labels, boxes=boxes)
    result = evaluation.result()
    probs = plain.predict(images, verbose=0)
    assert result["top1_cls"] == {
        "softmax": pytest.approx(100 * np.mean(probs.argmax(-1) == labels))
    }
    assert list(result["methods"]["gradcam"]) == ["softmax"]


class TestValidation:
    @pytest.mark.parametrize(
        "methods", ["gradcam", [], ["gradcam", "gradcam"], ["nope"], [3]]
    )
    def test_methods(self, dual, methods):
        with raises_invalid("methods", "CAM names of kd.cams.get"):
            CAMEvaluation(dual, methods)

    @pytest.mark.parametrize(
        "branches", ["sigmoid", (), ("softmax", "softmax"), ("both",)]
    )
    def test_branches(self, dual, branches):
        with raises_invalid("branches", "distinct branches"):
            CAMEvaluation(dual, ["gradcam"], branches=branches)

    def test_sigmoid_needs_a_dual_model(self):
        plain = kd.small_cnn(CLASSES, (SIZE, SIZE, 3), width=4)
        with raises_invalid("branches", "kd.dual_sigmoid"):
            CAMEvaluation(plain, ["gradcam"])
        with raises_invalid("confidence", "DualSigmoidModel"):
            CAMEvaluation(
                plain, ["gradcam"], branches=("softmax",), confidence="sigmoid_softmax"
            )

    def test_confidence(self, dual):
        with raises_invalid("confidence", '"softmax", "sigmoid_softmax"'):
            CAMEvaluation(dual, ["gradcam"], confidence="logit")

    def test_options(self, dual):
        with raises_invalid("cam_options", "GradCAM accepts"):
            CAMEvaluation(
                dual, ["gradcam"], cam_options={"gradcam": {"max_channels": 3}}
            )
        with raises_invalid("cam_options", "from methods in ['gradcam']"):
            CAMEvaluation(dual, ["gradcam"], cam_options={"scorecam": {}})
        with raises_invalid("box_options", "BoxEvaluator accepts"):
            CAMEvaluation(dual, ["gradcam"], box_options={"colour": 1})
        with raises_invalid("mask_options", "keyword arguments"):
            CAMEvaluation(dual, ["gradcam"], mask_options=[("cam_thresholds", [0.5])])
        with raises_invalid("gt_box_mode"):
            CAMEvaluation(dual, ["gradcam"], box_options={"gt_box_mode": "best"})

    def test_update_inputs(self, dual, batches):
        images, labels, boxes, masks, _ = batches[0]
        evaluation = CAMEvaluation(dual, ["gradcam"], branches=("sigmoid",))
        padded_boxes, num_boxes = padded(boxes)
        bad_images = images.copy()
        bad_images[0, 0, 0, 0] = np.nan
        cases = [
            ("images", {"images": bad_images}, "finite"),
            ("labels", {"labels": labels[:3]}, "shape (7,)"),
            ("labels", {"labels": labels + CLASSES}, "[0, 3)"),
            ("labels", {"labels": labels.astype(float)}, "int"),
            ("num_boxes", {"num_boxes": num_boxes}, "None when `boxes` is None"),
            (
                "boxes",
                {"boxes": padded_boxes[:, :, :3], "num_boxes": num_boxes},
                "padded",
            ),
            (
                "num_boxes",
                {"boxes": padded_boxes, "num_boxes": num_boxes + 1},
                "[1, 2]",
            ),
            (
                "num_boxes",
                {"boxes": padded_boxes, "num_boxes": num_boxes * 0 + 1},
                "-1 padding",
            ),
            ("boxes", {"boxes": padded_boxes}, "padding of kd.datasets.load_wsol"),
            ("boxes", {"boxes": [b + SIZE for b in boxes]}, f"x1 <= {SIZE}"),
            ("ignore", {"ignore": masks}, "None when `masks` is None"),
            ("masks", {"masks": masks[:, :4]}, "shape (7, 16, 16)"),
        ]
        for argument, kwargs, fragment in cases:
            arguments = {"images": images, "labels": labels, **kwargs}
            with raises_invalid(argument, fragment):
                evaluation.update(**arguments)
        assert evaluation.result()["num_images"] == 0  # No state changed.

    def test_boxes_and_masks_for_every_batch_or_none(self, dual, batches):
        images, labels, boxes, masks, _ = batches[0]
        evaluation = CAMEvaluation(dual, ["gradcam"], branches=("softmax",))
        evaluation.update(images, labels, boxes=boxes)
        with raises_invalid("boxes", "for every batch or for none", "boxes=None"):
            evaluation.update(images, labels)
        with raises_invalid("masks", "for every batch or for none"):
            evaluation.update(images, labels, boxes=boxes, masks=masks)
        assert evaluation.result()["num_images"] == len(labels)
