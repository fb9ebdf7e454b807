"""Peak memory of `training/evaluate.py` at two sizes of the test split.

Runs the whole evaluation (`evaluate.run`: every CAM of --methods on both
branches, boxes, pointing games, fidelity, the report and a fixed sample of
--num_figure_images figures) on the first N and the first 4N images of the
embedded cluttered-MNIST test split (read as a custom wsolevaluation
dataset), with a tiny random-init model, and reports the peak of the Python
and NumPy allocations (`tracemalloc`; TensorFlow's own buffers are not
counted, they depend on the batch, not on N). The evaluation is
`evaluate.run`'s, step by step, with a `gc.collect()` before each batch:
Python's full collections are rare in a process holding TensorFlow's
millions of objects, so without it the peak would count cyclic garbage of
earlier batches, which grows with the work done, not with what is kept.
Two settings:

- --nointervals --nosave_outcomes: only integer counts are kept (no
  per-image outcomes, no maps): the peak must not grow with N;
- the defaults (intervals and outcomes.npz): the per-image outcomes (packed
  bits for boxes, a few numbers otherwise) grow linearly, by the reported
  bytes per image.

    python benchmarks/evaluate_memory.py                 # 32 and 128 images, ~3 min
    python benchmarks/evaluate_memory.py --num_images=64 --methods=cam,gradcam
"""

import os

# oneDNN crashes in some TensorFlow kernels on CI CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import gc  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import tracemalloc  # noqa: E402

import keras  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_dualsig as kd  # noqa: E402

# The training scripts are a folder beside this one, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import data, devices, evaluate, models  # noqa: E402
from training import flags as flags_lib  # noqa: E402

IMAGE_SIZE = 56


def define_flags():
    flags.DEFINE_integer("num_images", 32, "The smaller size N (the larger: 4N).")
    flags.DEFINE_list("methods", ["gradcam"], "CAM variants.")
    flags.DEFINE_integer("batch_size", 16, "Images per batch.")
    flags.DEFINE_integer("num_resamples", 200, "Bootstrap resamples (intervals).")


def _setup(root, num_images):
    info = kd.datasets.cluttered_mnist(
        root=os.path.join(root, "data"),
        num_train=4,
        num_val=4,
        num_test=num_images,
        image_size=IMAGE_SIZE,
    )
    keras.utils.set_random_seed(0)
    dual = kd.dual_sigmoid(kd.small_cnn(10, (IMAGE_SIZE, IMAGE_SIZE, 3), width=8))
    model_dir = os.path.join(root, "model")
    os.makedirs(model_dir)
    path = os.path.join(model_dir, "dual_sigmoid.keras")
    dual.save(path)
    models.write_model_info(model_dir, arch="small_cnn", image_size=IMAGE_SIZE)
    return info, path


def peak_bytes(info, model, output_dir, num_images, with_outcomes, values):
    """Peak traced bytes of one `evaluate.run` on the first `num_images`."""
    run_flags = flags_lib.config(
        evaluate.SPEC,
        dataset="custom",
        data_root=info.data_root,
        metadata_root=info.metadata_root,
        num_classes=10,
        batch_size=values.batch_size,
        max_images=num_images,
        model=model,
        output_dir=output_dir,
        methods=list(values.methods),
        num_resamples=values.num_resamples,
        intervals=with_outcomes,
        save_outcomes=with_outcomes,
        num_figure_images=4,
    )
    tracemalloc.start()
    try:
        results = _evaluate(run_flags)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if results["num_images"] != num_images:
        raise RuntimeError(f"Evaluated {results['num_images']} != {num_images}")
    return peak


def _collected(batches):
    """The batches, with a full garbage collection before each."""
    for batch in batches:
        gc.collect()
        yield batch


def _evaluate(run_flags):
    """`evaluate.run` on one process, with `_collected` batches."""
    evaluate.check_flags(run_flags)
    info = models.read_model_info(run_flags.model, "model")
    devices.setup(run_flags)
    model = models.load_dual(run_flags.model)
    source = data.resolve_for(model, run_flags.model, info, run_flags, None, "model")
    figures = evaluate._Figures(run_flags.num_figure_images)
    evaluation = evaluate.evaluate_batches(
        model, _collected(evaluate.test_batches(source, run_flags)), run_flags, figures
    )
    gc.collect()
    return evaluate.finish(evaluation, figures, source.name, run_flags)


def run(values):
    """Returns {(with_outcomes, num_images): peak bytes}."""
    sizes = (values.num_images, 4 * values.num_images)
    peaks = {}
    with tempfile.TemporaryDirectory() as root:
        info, model = _setup(root, sizes[1])
        # A first small run compiles and caches what every run shares.
        peak_bytes(info, model, os.path.join(root, "warm"), sizes[0], True, values)
        for with_outcomes in (False, True):
            for size in sizes:
                output_dir = os.path.join(root, f"out_{with_outcomes}_{size}")
                peaks[with_outcomes, size] = peak_bytes(
                    info, model, output_dir, size, with_outcomes, values
                )
    return sizes, peaks


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    values = flags.FLAGS
    sizes, peaks = run(values)
    pairs = 2 * len(values.methods)
    print(
        f"Peak traced memory (tracemalloc) of training/evaluate.py, methods "
        f"{','.join(values.methods)} x 2 branches, {IMAGE_SIZE} px, batches of "
        f"{values.batch_size}:"
    )
    print(f"| setting | {sizes[0]} images | {sizes[1]} images | growth per image |")
    print("|---|---:|---:|---:|")
    for with_outcomes, name in (
        (False, "--nointervals --nosave_outcomes"),
        (True, f"intervals ({values.num_resamples} resamples) + outcomes.npz"),
    ):
        small, large = peaks[with_outcomes, sizes[0]], peaks[with_outcomes, sizes[1]]
        growth = (large - small) / (sizes[1] - sizes[0])
        print(
            f"| {name} | {small / 2**20:.1f} MiB | {large / 2**20:.1f} MiB "
            f"| {growth / 1024:.2f} KiB ({growth / pairs:.0f} B per method-branch) |"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
