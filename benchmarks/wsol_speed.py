"""Speed of `kd.metrics.BoxEvaluator` against the straightforward algorithm.

Both evaluate the same CAM-like 224x224 score maps at the same 1001 thresholds
(0.000 ... 1.000) in the same run, and must give identical results (asserted).
The reference is the per-threshold loop of clovaai/wsolevaluation
(`compute_bboxes_from_scoremaps` + `calculate_multiple_iou`) that the tests use,
tests/helpers/wsol_reference.py: one OpenCV `findContours` per threshold, shared
by the multi-contour (MaxBoxAccV2) and the largest-contour (MaxBoxAcc, GT-known
Loc) boxes so that it does no redundant work. `BoxEvaluator` calls
`findContours` once per distinct uint8 level. It runs twice, with
`num_workers=1` and `num_workers=--num_workers` threads (default 2), on the same
maps in the same run: their states must be identical (asserted), and the ratio
is the thread scaling.

    python benchmarks/wsol_speed.py                      # 256 maps, ~15 s
    python benchmarks/wsol_speed.py --num_images=2000    # more maps
    python benchmarks/wsol_speed.py --num_images=16 --size=64   # a smoke run
"""

import os
import sys

# oneDNN crashes in some TensorFlow kernels on CI CPUs; keras_dualsig imports TF.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_dualsig as kd  # noqa: E402

# The reference lives with the tests, which check the library against it.
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
)
from helpers.wsol_reference import ReferenceBoxEvaluator  # noqa: E402


def define_flags():
    flags.DEFINE_integer("num_images", 256, "Number of score maps.")
    flags.DEFINE_integer("size", 224, "Score map height and width.")
    flags.DEFINE_integer("batch_size", 32, "Maps per BoxEvaluator.update call.")
    flags.DEFINE_integer("seed", 0, "Seed of the random maps and boxes.")
    flags.DEFINE_integer("num_workers", 2, "Threads of the parallel BoxEvaluator.")


def cam_like_maps(num_images, size, rng):
    """CAM-like maps: a ReLU'd 7x7 field, bilinear-resized, min-max scaled.

    Like a CAM of a 224x224 input: one to three Gaussian bumps plus noise on
    a 7x7 grid, rectified, upsampled bilinearly and normalised to [0, 1].

    Returns:
        float32 (num_images, size, size) in [0, 1].
    """
    grid = np.stack(np.meshgrid(np.arange(7), np.arange(7), indexing="ij"), -1)
    maps = np.empty((num_images, size, size), np.float32)
    for index in range(num_images):
        field = rng.normal(0.0, 0.15, (7, 7))
        for _ in range(rng.integers(1, 4)):
            center = rng.uniform(0, 6, 2)
            width = rng.uniform(0.7, 2.0)
            field += rng.uniform(0.5, 1.0) * np.exp(
                -((grid - center) ** 2).sum(-1) / (2 * width**2)
            )
        field = np.maximum(field, 0.0).astype(np.float32)
        scoremap = cv2.resize(field, (size, size), interpolation=cv2.INTER_LINEAR)
        scoremap -= scoremap.min()
        maps[index] = scoremap / max(float(scoremap.max()), 1e-12)
    return maps


def gt_boxes_for(scoremaps, rng):
    """GT boxes near each map's object: the box of `map > u`, jittered.

    Gives accuracies in a realistic range; every third image gets a second,
    random box.
    """
    num_images, height, width = scoremaps.shape
    boxes = []
    for scoremap in scoremaps:
        ys, xs = np.nonzero(scoremap > rng.uniform(0.2, 0.6))
        jitter = rng.integers(-12, 13, 4)
        box = [
            np.clip(xs.min() + jitter[0], 0, width - 1),
            np.clip(ys.min() + jitter[1], 0, height - 1),
            np.clip(xs.max() + jitter[2], 0, width - 1),
            np.clip(ys.max() + jitter[3], 0, height - 1),
        ]
        box = [min(box[0], box[2]), min(box[1], box[3]), *box[2:]]
        box[2], box[3] = max(box[0], box[2]), max(box[1], box[3])
        image_boxes = [box]
        if rng.random() < 1 / 3:
            x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
            image_boxes.append(
                [
                    x0,
                    y0,
                    x0 + rng.integers(8, width // 2),
                    y0 + rng.integers(8, height // 2),
                ]
            )
        boxes.append(np.array(image_boxes, np.int64))
    return boxes


def run(flags_values):
    """Times both algorithms on the same maps; returns the measurements.

    The two alternate batch by batch, so that a change in machine load during
    the run affects both alike.
    """
    rng = np.random.default_rng(flags_values.seed)
    num_images, size = flags_values.num_images, flags_values.size
    scoremaps = cam_like_maps(num_images, size, rng)
    gt_boxes = gt_boxes_for(scoremaps, rng)
    correct = rng.random(num_images) < 0.7
    thresholds = np.arange(0, 1.001, 0.001)

    evaluator = kd.metrics.BoxEvaluator(cam_thresholds=thresholds, num_workers=1)
    parallel = kd.metrics.BoxEvaluator(
        cam_thresholds=thresholds, num_workers=flags_values.num_workers
    )
    reference = ReferenceBoxEvaluator(thresholds)
    fast_seconds = reference_seconds = parallel_seconds = 0.0
    for begin in range(0, num_images, flags_values.batch_size):
        batch = slice(begin, begin + flags_values.batch_size)
        start = time.perf_counter()
        evaluator.update(scoremaps[batch], gt_boxes[batch], correct[batch])
        fast_seconds += time.perf_counter() - start
        start = time.perf_counter()
        parallel.update(scoremaps[batch], gt_boxes[batch], correct[batch])
        parallel_seconds += time.perf_counter() - start
        start = time.perf_counter()
        reference.update(scoremaps[batch], gt_boxes[batch], correct[batch])
        reference_seconds += time.perf_counter() - start

    fast, expected = evaluator.result(), reference.result()
    if fast != expected:
        raise RuntimeError(f"Results differ: {fast} != {expected}")
    one, many = evaluator.state(), parallel.state()
    if any(not np.array_equal(one[key], many[key]) for key in one):
        raise RuntimeError("num_workers=1 and the parallel evaluator differ")
    return {
        "num_workers": flags_values.num_workers,
        "parallel_seconds": parallel_seconds,
        "num_images": num_images,
        "size": size,
        "num_thresholds": len(thresholds),
        "reference_seconds": reference_seconds,
        "fast_seconds": fast_seconds,
        "result": fast,
    }


def main(argv):
    del argv
    m = run(flags.FLAGS)
    reference_rate = m["num_images"] / m["reference_seconds"]
    fast_rate = m["num_images"] / m["fast_seconds"]
    print(
        f"{m['num_images']} maps {m['size']}x{m['size']}, "
        f"{m['num_thresholds']} CAM thresholds, identical results: "
        + ", ".join(f"{k}={v:.2f}" for k, v in m["result"].items())
    )
    print("| algorithm | seconds | images/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(
        f"| per-threshold reference | {m['reference_seconds']:.2f} "
        f"| {reference_rate:.1f} | 1.0x |"
    )
    print(
        f"| kd.metrics.BoxEvaluator | {m['fast_seconds']:.2f} "
        f"| {fast_rate:.1f} | {fast_rate / reference_rate:.1f}x |"
    )
    parallel_rate = m["num_images"] / m["parallel_seconds"]
    print(
        f"| kd.metrics.BoxEvaluator, {m['num_workers']} threads "
        f"| {m['parallel_seconds']:.2f} | {parallel_rate:.1f} "
        f"| {parallel_rate / reference_rate:.1f}x |"
    )
    print(
        f"Thread scaling, {m['num_workers']} workers vs 1 (identical states): "
        f"{parallel_rate / fast_rate:.2f}x on {kd.metrics.wsol.available_cores()} "
        "available cores"
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
