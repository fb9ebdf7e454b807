r"""The whole pipeline on the embedded dataset, offline, in minutes on a CPU.

1. builds the embedded cluttered-MNIST dataset (real MNIST digits shipped in a
   PyPI wheel; cached after the first run),
2. trains the small CNN classifier (stage 1),
3. attaches and trains the sigmoid branch on cached trunk features (stage 2),
4. evaluates both branches with the paper's CAM variants and writes results.json,
   report.md and figures to --output_dir.

  python -m training.quickstart --output_dir=runs/quickstart
"""

import os
import time

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, logging  # noqa: E402

from training import checkpoints, evaluate, train_classifier, train_sigmoid  # noqa: E402
from training import flags as flags_lib  # noqa: E402
from training.flags import flag  # noqa: E402

SPEC = [
    flag("output_dir", "runs/quickstart", "Where everything is written."),
    flag("data_root", None, "Dataset cache folder (default under ~/.keras)."),
    flag("small", False, "A reduced run for tests: 1000/100/200 images, same epochs."),
    flag("seed", 0, "Random seed.", minimum=0, maximum=flags_lib.MAX_SEED),
    flag("classifier_epochs", 8, "Stage-1 epochs.", minimum=1),
    flag("sigmoid_epochs", 5, "Stage-2 epochs.", minimum=1),
    flag(
        "methods",
        evaluate.PAPER_METHODS,
        "CAM variants to evaluate (default: the paper's seven).",
    ),
    *checkpoints.FLAGS,
]


def define_flags():
    flags_lib.define(SPEC)


def run(flags, datasets_override=None):
    """Runs the three stages; returns {"classifier", "sigmoid", "results", "seconds"}.

    Args:
        flags: namespace with the SPEC flags (see `flags.config`).
        datasets_override: optional `data.DatasetsOverride` (or a dict of its
            fields) passed on to every stage instead of the embedded dataset.
    """
    flags_lib.validate(flags, SPEC)
    evaluate.check_methods(flags.methods)
    start = time.time()
    out = flags.output_dir
    data = {
        "dataset": "cluttered_mnist",
        "data_root": flags.data_root,
        "embedded_size": "small" if flags.small else "full",
        "seed": flags.seed,
        "batch_size": 64,
    }
    resume = {"allow_flag_changes": flags.allow_flag_changes}
    logging.info("Stage 1/3: classifier")
    classifier = train_classifier.run(
        flags_lib.config(
            train_classifier.SPEC,
            **data,
            **resume,
            model_dir=os.path.join(out, "classifier"),
            epochs=flags.classifier_epochs,
            learning_rate=0.05,
            weight_decay=5e-4,
            decay_every=max(1, round(flags.classifier_epochs * 0.75)),
            # Flips turn digits into other shapes; the canvas already varies
            # position and scale.
            augment=False,
        ),
        datasets_override,
    )
    logging.info("Stage 2/3: sigmoid branch")
    sigmoid = train_sigmoid.run(
        flags_lib.config(
            train_sigmoid.SPEC,
            **data,
            classifier=classifier["model_path"],
            **resume,
            model_dir=os.path.join(out, "sigmoid"),
            epochs=flags.sigmoid_epochs,
            learning_rate=0.05,
            weight_decay=1e-4,
            cache_features=True,
        ),
        datasets_override,
    )
    logging.info("Stage 3/3: evaluation")
    results = evaluate.run(
        flags_lib.config(
            evaluate.SPEC,
            **{k: v for k, v in data.items() if k != "batch_size"},
            batch_size=50,
            model=sigmoid["model_path"],
            output_dir=out,
            methods=list(flags.methods),
            scorecam_channels=16,
        ),
        datasets_override,
    )
    seconds = time.time() - start
    logging.info(
        "Done in %.0f s. Test accuracy %.2f%%. Report: %s",
        seconds,
        results["top1_cls"]["softmax"],
        os.path.join(out, "report.md"),
    )
    return {
        "classifier": classifier,
        "sigmoid": sigmoid,
        "results": results,
        "seconds": seconds,
    }


def main(argv):
    del argv
    run(flags_lib.from_absl(SPEC))


if __name__ == "__main__":
    define_flags()
    app.run(main)
