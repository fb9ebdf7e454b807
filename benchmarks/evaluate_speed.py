"""Images/s of the whole evaluation: the per-method path vs the one-pass CAMs.

Both paths run `kd.metrics.CAMEvaluation` (every --methods CAM on both
branches, boxes with MaxBoxAccV2 at 1001 thresholds, pointing games, masks
for PxAP, Average Drop / Increase in Confidence / Average Gain) on the same
batches of the embedded cluttered-MNIST test split, alternating batch by
batch in one run, with a tiny random-init model (speed does not depend on
the weights):

- per-method: `CAMEvaluation(one_pass=False)`, one CAM call per method and
  branch, boxes on 1 thread;
- one-pass: the default `CAMEvaluation`, every method's maps from
  `kd.cams.compute` (one forward and one backward pass per branch), boxes on
  1 thread (the default);
- one-pass + threads: the same with `BoxEvaluator` on every available core.

Their states (every count and per-image outcome) must be identical
(asserted); the ratio of images/s is printed.

    python benchmarks/evaluate_speed.py                  # 64 images, 96 px
    python benchmarks/evaluate_speed.py --num_images=16 --image_size=56   # smoke
"""

import os

# oneDNN crashes in some TensorFlow kernels on CI CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_dualsig as kd  # noqa: E402


def define_flags():
    flags.DEFINE_integer("num_images", 64, "Test images.")
    flags.DEFINE_integer("image_size", 96, "Image (and map) size.")
    flags.DEFINE_integer("batch_size", 16, "Images per batch.")
    flags.DEFINE_list(
        "methods",
        ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"],
        "CAM variants (Score-CAM is left out by default: its cost is model calls).",
    )


def _batches(values, root):
    """Numpy batches (images, labels, padded boxes, num_boxes, masks, ignore)."""
    info = kd.datasets.cluttered_mnist(
        root=root,
        num_train=4,
        num_val=4,
        num_test=values.num_images,
        image_size=values.image_size,
    )
    boxes = info.load("test", batch_size=values.batch_size)
    masks = info.load("test", localization="masks", batch_size=values.batch_size)
    out = []
    for box_batch, mask_batch in zip(boxes, masks, strict=True):
        out.append(
            {
                "images": box_batch["image"].numpy(),
                "labels": box_batch["label"].numpy().astype(np.int64),
                "boxes": box_batch["boxes"].numpy(),
                "num_boxes": box_batch["num_boxes"].numpy(),
                "masks": mask_batch["mask"].numpy(),
                "ignore": mask_batch["ignore"].numpy(),
            }
        )
    return out


def _update(evaluation, batch):
    evaluation.update(
        batch["images"],
        batch["labels"],
        boxes=batch["boxes"],
        num_boxes=batch["num_boxes"],
        masks=batch["masks"],
        ignore=batch["ignore"],
    )


def run(values):
    """Times both paths on the same batches; returns the measurements."""
    with tempfile.TemporaryDirectory() as root:
        batches = _batches(values, root)
    size = values.image_size
    keras.utils.set_random_seed(0)
    dual = kd.dual_sigmoid(kd.small_cnn(10, (size, size, 3), width=16))
    cores = kd.metrics.wsol.available_cores()
    methods = list(values.methods)
    paths = {
        "per-method": kd.metrics.CAMEvaluation(dual, methods, one_pass=False),
        "one-pass": kd.metrics.CAMEvaluation(dual, methods),
        "one-pass + threads": kd.metrics.CAMEvaluation(
            dual, methods, box_options={"num_workers": cores}
        ),
    }
    # One batch each first: compiles every function outside the timing.
    for evaluation in paths.values():
        _update(evaluation, batches[0])
        evaluation.reset()
    seconds = dict.fromkeys(paths, 0.0)
    for batch in batches:
        for name, evaluation in paths.items():
            start = time.perf_counter()
            _update(evaluation, batch)
            seconds[name] += time.perf_counter() - start
    slow = paths["per-method"].state()
    for name in ("one-pass", "one-pass + threads"):
        fast = paths[name].state()
        if sorted(slow) != sorted(fast) or any(
            not np.array_equal(slow[key], fast[key]) for key in slow
        ):
            raise RuntimeError(f"The {name} path gives other states")
    return {
        "num_images": values.num_images,
        "cores": cores,
        "seconds": seconds,
        "result": paths["one-pass"].result(),
    }


def main(argv):
    del argv
    values = flags.FLAGS
    m = run(values)
    n = m["num_images"]
    print(
        f"{n} test images of cluttered MNIST at {values.image_size} px, "
        f"{len(values.methods)} methods x 2 branches (boxes, pointing games, "
        "PxAP, fidelity), identical states on every path."
    )
    print("| path | seconds | images/s | speed-up |")
    print("|---|---:|---:|---:|")
    base = n / m["seconds"]["per-method"]
    for name, label in (
        ("per-method", "per-method CAMs, boxes on 1 thread"),
        ("one-pass", "one-pass CAMs (kd.cams.compute), boxes on 1 thread"),
        ("one-pass + threads", f"one-pass CAMs, boxes on {m['cores']} threads"),
    ):
        rate = n / m["seconds"][name]
        print(
            f"| {label} | {m['seconds'][name]:.2f} | {rate:.1f} | {rate / base:.2f}x |"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
