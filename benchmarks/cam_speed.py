"""CAM speed: keras_dualsig.cams against tf-keras-vis, side by side in one run.

For each variant, images per second of `kd.cams.<Variant>` on the sigmoid
branch of a `kd.dual_sigmoid` model, and of tf-keras-vis's counterpart (where
it has one: Gradcam, GradcamPlusPlus, Layercam, Scorecam) reading the same
branch logit through `keras_dualsig.interop.tf_keras_vis`, on the same model,
batch and feature layer, maps resized to the input size and normalised by
both. Every measurement is warmed up first (tracing, graph building).

    python benchmarks/cam_speed.py                       # MobileNetV2 128x128 b16
    python benchmarks/cam_speed.py --model resnet50 --size 224 --batch 8

The last table compares `kd.cams.compute` (the maps of many methods on both
branches from one forward and one backward pass per branch) with separate
calls of the same methods, in the same run:

    python benchmarks/cam_speed.py --compute-only
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

# oneDNN crashes in some convolution gradients on these CPUs; must be set
# before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig.interop import tf_keras_vis as kd_vis  # noqa: E402

_MODELS = {
    "mobilenet_v2": keras.applications.MobileNetV2,
    "resnet50": keras.applications.ResNet50,
    "efficientnet_b0": keras.applications.EfficientNetB0,
}
_VARIANTS = kd.cams.NAMES


def define_flags(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(_MODELS), default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=128, help="input height/width")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls")
    parser.add_argument(
        "--variants", default=",".join(_VARIANTS), help="comma-separated names"
    )
    parser.add_argument(
        "--max-channels",
        type=int,
        default=32,
        help="Score-CAM channel cap, the same for both libraries (max_N)",
    )
    parser.add_argument(
        "--score-batch-size",
        type=int,
        default=16,
        help="masked inputs per forward, the same for both libraries",
    )
    parser.add_argument(
        "--noise-samples",
        type=int,
        default=4,
        help="SS-CAM / IS-CAM samples (torchcam's defaults, 35 and 10, are slow)",
    )
    parser.add_argument("--no-tf-keras-vis", action="store_true")
    parser.add_argument(
        "--compute-methods",
        default="",
        help="methods of the compute() comparison; empty: compute()'s default",
    )
    parser.add_argument(
        "--compute-only",
        action="store_true",
        help="only the compute() vs separate calls comparison",
    )
    return parser.parse_args(argv)


def _seconds(fn):
    # tf-keras-vis's Scorecam runs `predict`, whose progress bar goes to stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def _timed_pair(ours, theirs, repeats):
    """Median seconds per call of each, warmed up, timed alternately.

    Alternating the two keeps slow drifts of the machine's load (other
    processes on a shared CPU) from favouring either library.
    """
    fns = [fn for fn in (ours, theirs) if fn is not None]
    for fn in fns:
        _seconds(fn)  # Warm-up: tracing, graph building.
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times, strict=True):
            bucket.append(_seconds(fn))
    medians = [statistics.median(bucket) for bucket in times]
    return medians[0], (medians[1] if theirs is not None else None)


def _options(name, flags):
    """Constructor options of a method in this benchmark."""
    if name in ("scorecam", "sscam", "iscam"):
        options = {
            "max_channels": flags.max_channels,
            "score_batch_size": flags.score_batch_size,
        }
        if name != "scorecam":
            options["num_samples"] = flags.noise_samples
        return options
    if name == "ablationcam":
        return {"ablation_batch_size": flags.score_batch_size}
    return {}


def _ours(dual, name, flags):
    return kd.cams.get(name)(dual, **_options(name, flags))


def _theirs(dual, name, flags, images, class_index):
    """A zero-argument callable running tf-keras-vis's variant, or None."""
    if flags.no_tf_keras_vis:
        return None
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam

    classes = {
        "gradcam": Gradcam,
        "gradcam++": GradcamPlusPlus,
        "layercam": Layercam,
        "scorecam": Scorecam,
    }
    if name not in classes:
        return None
    visualizer = classes[name](kd_vis.branch_model(dual, "sigmoid"))
    kwargs = {
        "penultimate_layer": kd_vis.FEATURES,
        "seek_penultimate_conv_layer": False,
    }
    if name == "scorecam":
        kwargs.update(max_N=flags.max_channels, batch_size=flags.score_batch_size)
    score = kd_vis.LogitScore(class_index, from_softmax=name == "scorecam")
    return lambda: visualizer(score, images, **kwargs)


def _setup(flags):
    keras.utils.set_random_seed(0)
    classifier = _MODELS[flags.model](
        input_shape=(flags.size, flags.size, 3),
        weights=None,
        classes=flags.classes,
    )
    dual = kd.dual_sigmoid(classifier, seed=0)
    images = (
        np.random.default_rng(0)
        .uniform(-1.0, 1.0, (flags.batch, flags.size, flags.size, 3))
        .astype("float32")
    )
    class_index = np.argmax(dual.predict(images, verbose=0)["softmax"], axis=-1)
    return dual, images, class_index


def run(flags):
    """Measures every variant; returns (rows, Score-CAM union channel count)."""
    dual, images, class_index = _setup(flags)
    rows = []
    for name in flags.variants.split(","):
        cam = _ours(dual, name, flags)
        ours, theirs = _timed_pair(
            lambda cam=cam: cam(images, class_index),
            _theirs(dual, name, flags, images, class_index),
            flags.repeats,
        )
        rows.append(
            {
                "variant": name,
                "ours": flags.batch / ours,
                "tf_keras_vis": None if theirs is None else flags.batch / theirs,
            }
        )
    return rows, _union_channels(dual, images, flags.max_channels)


def _union_channels(dual, images, cap):
    """Channels per image tf-keras-vis's Scorecam scores with max_N=cap.

    It keeps the union over the batch of each image's top-`cap` channels (by
    spatial standard deviation) and scores all of them for every image;
    kd.cams.ScoreCAM scores each image's own top `cap`.
    """
    features = dual.trunk(images, training=False).numpy()
    top = np.argsort(-features.std(axis=(1, 2)), axis=-1)[:, :cap]
    return len(np.unique(top))


def _table(result, flags):
    rows, union = result
    lines = [
        f"model={flags.model} size={flags.size} batch={flags.batch} "
        f"repeats={flags.repeats} max_channels={flags.max_channels} "
        f"score_batch_size={flags.score_batch_size} (sigmoid branch, images/s, "
        "median of alternating repeats after warm-up)",
        "| variant | keras_dualsig img/s | tf-keras-vis img/s | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        theirs = row["tf_keras_vis"]
        lines.append(
            f"| {row['variant']} | {row['ours']:.1f} | "
            + ("-" if theirs is None else f"{theirs:.1f}")
            + " | "
            + ("-" if theirs is None else f"{row['ours'] / theirs:.1f}x")
            + " |"
        )
    score = [row for row in rows if row["variant"] == "scorecam"]
    if score:
        line = (
            f"Score-CAM: both cap at max_channels={flags.max_channels} per image; "
            "tf-keras-vis scores the union of the per-image top channels over the "
            f"batch, {union} channels per image here (kd.cams: {flags.max_channels})."
        )
        if score[0]["tf_keras_vis"] is not None:
            # Masked forwards per second: the per-forward speed, union aside.
            ours = score[0]["ours"] * (flags.max_channels + 1)
            theirs = score[0]["tf_keras_vis"] * (union + 1)
            line += (
                f" Model forwards/s: {ours:.0f} vs {theirs:.0f} ({ours / theirs:.1f}x)."
            )
        lines.append(line)
    return "\n".join(lines)


def run_compute(flags):
    """Seconds per batch of compute() and of separate calls, same methods."""
    dual, images, class_index = _setup(flags)
    if flags.compute_methods:
        methods = flags.compute_methods.split(",")
    else:
        methods = [
            name
            for name in kd.cams.NAMES
            if name not in ("scorecam", "sscam", "iscam", "ablationcam")
        ]
    options = {name: _options(name, flags) for name in methods}
    branches = ["sigmoid", "softmax"]
    separate = {name: kd.cams.get(name)(dual, **options[name]) for name in methods}

    def together():
        kd.cams.compute(dual, images, methods, branches, class_index, options=options)

    def apart():
        for name in methods:
            for branch in branches:
                separate[name](images, class_index, branch=branch)

    shared, alone = _timed_pair(together, apart, flags.repeats)
    return methods, shared, alone


def _compute_table(result, flags):
    methods, shared, alone = result
    return "\n".join(
        [
            f"compute() vs separate calls: model={flags.model} size={flags.size} "
            f"batch={flags.batch} repeats={flags.repeats}, {len(methods)} methods "
            f"x 2 branches ({','.join(methods)})",
            "| | s per batch | img/s (all maps) |",
            "|---|---:|---:|",
            f"| kd.cams.compute | {shared:.3f} | {flags.batch / shared:.1f} |",
            f"| separate calls | {alone:.3f} | {flags.batch / alone:.1f} |",
            f"speed-up of compute(): {alone / shared:.2f}x",
        ]
    )


def main(argv=None):
    flags = define_flags(argv)
    if not flags.compute_only:
        print(_table(run(flags), flags))  # noqa: T201 - a script's output.
    print(_compute_table(run_compute(flags), flags))  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])
