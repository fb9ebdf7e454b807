r"""Evaluate both branches of a dual-sigmoid model with every CAM variant.

For each method and branch: WSOL metrics (Top-1 Loc, GT-known Loc, MaxBoxAccV2,
pointing games on box datasets; PxAP on mask datasets) from maps of the
ground-truth class, and explanation fidelity (Average Drop, Increase in
Confidence, Average Gain, and on request ROAD, deletion, insertion) from maps
of the predicted class; on the embedded dataset also the class-discrimination
test on its two-digit images. --metrics picks the families. With
--intervals (default), every number has a seeded 95% bootstrap interval and
every sigmoid-minus-softmax delta a paired-bootstrap interval. Writes to
--output_dir:
  results.json  {"dataset", "num_images", "top1_cls", "methods": {m: {branch: {...},
                "delta": {metric: {"value", "CI"}}}}}
  report.md     a paper-style table: baseline row, "+ sigmoid branch" row, deltas
                (marked * where the delta's interval excludes 0)
  outcomes.npz  every image's outcome of every metric (--save_outcomes)
  figures/*.png test images with softmax- and sigmoid-branch maps side by side

  python -m training.evaluate --model=runs/sig/dual_sigmoid.keras \
      --output_dir=runs/eval
"""

import os

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig._errors import invalid  # noqa: E402
from training import data, devices, files, models  # noqa: E402
from training import flags as flags_lib  # noqa: E402
from training.flags import flag  # noqa: E402

BRANCHES = ("softmax", "sigmoid")
DEFAULT_METHODS = list(kd.cams.NAMES)
# The variants of the paper's tables (the quickstart's default).
PAPER_METHODS = [
    "cam",
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "scorecam",
]
METHOD_TITLES = {
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "Score-CAM",
}
BOX_METRICS = ("Top-1 Loc", "GT-known Loc", "MaxBoxAccV2")
# The report's columns, in order (those present in the results).
REPORT_METRICS = (
    *BOX_METRICS,
    "Pointing game",
    "Energy pointing game",
    "PxAP",
    "Average Drop",
    "Increase in Confidence",
    "Average Gain",
    "ROAD combined",
    "Deletion AUC",
    "Insertion AUC",
    "Pointing game (pairs)",
    "Energy pointing game (pairs)",
)
LOWER_IS_BETTER = {"Average Drop", "Deletion AUC"}
CAUSAL_METRICS = ("road", "deletion", "insertion")
FAMILIES = ("wsol", "fidelity", "pairs", *CAUSAL_METRICS)
DEFAULT_FAMILIES = ("wsol", "fidelity", "pairs")

SPEC = [
    *flags_lib.COMMON,
    flag("model", None, "Path of the dual-sigmoid model (.keras).", path=True),
    flag("output_dir", "runs/eval", "Where results, report and figures go."),
    flag("methods", DEFAULT_METHODS, "CAM variants (names of kd.cams.get)."),
    flag(
        "scorecam_channels",
        32,
        "Channels Score-CAM scores (most varying).",
        minimum=1,
    ),
    flag(
        "confidence",
        "softmax",
        "Fidelity confidence.",
        choices=("softmax", "sigmoid_softmax"),
    ),
    flag(
        "metrics",
        list(DEFAULT_FAMILIES),
        "Metric families: wsol (boxes / masks, pointing games), fidelity "
        "(Average Drop, Increase in Confidence, Average Gain), pairs (the "
        "class-discrimination test on the dataset's two-object test images, "
        "the embedded dataset's test_pairs split), and the causal metrics "
        "road, deletion, insertion (many model calls per image).",
    ),
    flag(
        "intervals",
        True,
        "Bootstrap confidence intervals (95%) of every number and paired "
        "intervals of the sigmoid-minus-softmax deltas (seeded by --seed).",
    ),
    flag("num_resamples", 1000, "Bootstrap resamples of --intervals.", minimum=1),
    flag(
        "save_outcomes",
        True,
        "Write every image's outcome of every metric to outcomes.npz.",
    ),
    flag(
        "num_figure_images",
        8,
        "Test images shown in the figures (0: no figures).",
        minimum=0,
    ),
]
# Shared flags evaluate does not use: it runs on one device, compiles nothing
# and writes to --output_dir. Other values than the defaults are refused.
UNUSED_FLAGS = ("model_dir", "jit_compile", "strategy", "num_cpu_devices", "tpu")
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
OUTCOMES_FILE = "outcomes.npz"
FIGURES_DIR = "figures"
# Predicted boxes drawn in the figures: WSOL's usual CAM threshold.
FIGURE_BOX_THRESHOLD = 0.2


def define_flags():
    flags_lib.define(SPEC)


def _gt_boxes(batch):
    """Padded boxes -> list of int (n_i, 4) for the figures (drawn clipped)."""
    boxes = batch["boxes"].numpy()
    counts = batch["num_boxes"].numpy()
    height, width = batch["image"].shape[1:3]
    limit = np.array([width - 1, height - 1, width - 1, height - 1])
    return [
        np.minimum(b[:n], limit).astype(np.int64)
        for b, n in zip(boxes, counts, strict=True)
    ]


class _Figures:
    """Keeps the first images and their maps for the comparison figures."""

    def __init__(self, limit):
        self.limit = limit
        self.images, self.captions, self.gt_boxes = [], [], []
        self.maps = {}

    def room(self):
        return self.limit - len(self.images)

    def add_images(self, images, captions, gt_boxes):
        n = self.room()
        self.images.extend(images[:n])
        self.captions.extend(captions[:n])
        self.gt_boxes.extend(gt_boxes[:n] if gt_boxes is not None else [None] * n)
        return n

    def add_maps(self, method, branch, maps, n):
        self.maps.setdefault(method, {}).setdefault(branch, []).extend(maps[:n])

    def save(self, directory, loc_threshold):
        """Writes `<directory>/<method>.png`; returns their paths (none if no image)."""
        if not self.images:
            return []
        os.makedirs(directory, exist_ok=True)
        paths = []
        has_boxes = all(b is not None for b in self.gt_boxes)
        for method, by_branch in self.maps.items():
            title = METHOD_TITLES.get(method, method)
            columns = {
                f"{title} ({branch})": np.stack(by_branch[branch])
                for branch in BRANCHES
            }
            boxes = None
            if has_boxes:
                boxes = {
                    column: [kd.metrics.cam_to_boxes(m, loc_threshold) for m in maps]
                    for column, maps in columns.items()
                }
            figure = kd.vis.compare(
                np.stack(self.images),
                columns,
                boxes=boxes,
                gt_boxes=self.gt_boxes if has_boxes else None,
                captions=self.captions,
            )
            path = os.path.join(directory, f"{method.replace('++', 'pp')}.png")
            figure.savefig(path, dpi=100)
            paths.append(path)
        return paths


def run(flags, datasets_override=None):
    """Evaluates the model; returns the results dict (also written to disk).

    Args:
        flags: namespace with the SPEC flags (see `flags.config`).
        datasets_override: optional `data.DatasetsOverride` (or a dict of its
            fields): "test" (unbatched dict elements as `load_wsol` yields
            them, with "boxes"/"num_boxes" and/or "mask"/"ignore") and "name"
            replace the loaders.

    Returns:
        dict: "dataset", "num_images", "top1_cls" ({branch: percent}),
        "methods" ({method: {branch: {metric: percent}}}).
    """
    check_flags(flags)
    info = models.read_model_info(flags.model, "model")
    devices.setup(flags)
    model = models.load_dual(flags.model)
    source = data.resolve_for(
        model, flags.model, info, flags, datasets_override, "model"
    )
    figures = _Figures(flags.num_figure_images)
    pairs = None
    if "pairs" in flags.metrics:
        pairs = source.pairs(flags.batch_size, flags.max_images)
        if pairs is None and list(flags.metrics) != list(DEFAULT_FAMILIES):
            logging.warning(
                "--metrics has pairs, but %s has no two-object test images "
                "(the embedded dataset has them): no pairs test.",
                source.name,
            )
    evaluation = evaluate_batches(
        model,
        test_batches(source, flags),
        flags,
        figures,
        num_images=source.count("test", flags.max_images),
        pairs=pairs,
    )
    results = {
        "dataset": source.name,
        **evaluation.result(
            intervals=flags.intervals,
            num_resamples=flags.num_resamples,
            seed=flags.seed,
        ),
    }
    if flags.save_outcomes:
        os.makedirs(flags.output_dir, exist_ok=True)
        evaluation.save_outcomes(os.path.join(flags.output_dir, OUTCOMES_FILE))
    write_outputs(results, figures, flags.output_dir)
    return results


def check_methods(methods):
    """Refuses an empty --methods, unknown CAM names and repeated ones.

    Raises:
        ValueError: (Keras template) naming `methods`.
    """
    names = list(methods)
    unknown = [m for m in names if m not in kd.cams.NAMES]
    if not names or unknown or len(set(names)) != len(names):
        raise invalid(
            "methods",
            "a non-empty list of distinct CAM names among " + ", ".join(kd.cams.NAMES),
            methods,
        )


def check_flags(flags):
    """Validates every flag at start (types, ranges, combinations).

    Raises:
        ValueError: (Keras template) naming the flag, its value and what is
            accepted.
    """
    flags_lib.validate(flags, SPEC)
    if not flags.model:
        raise invalid(
            "model", "the path of the stage-2 dual_sigmoid.keras", flags.model
        )
    check_methods(flags.methods)
    families = list(flags.metrics)
    if (
        not families
        or any(m not in FAMILIES for m in families)
        or len(set(families)) != len(families)
    ):
        raise invalid(
            "metrics",
            "a non-empty list of distinct metric families among " + ", ".join(FAMILIES),
            flags.metrics,
        )
    defaults = {item.name: item.default for item in SPEC}
    for name in UNUSED_FLAGS:
        if getattr(flags, name) != defaults[name]:
            raise invalid(
                name,
                f"its default {defaults[name]!r}: evaluate does not use it (it "
                "runs on one device and writes to --output_dir)",
                getattr(flags, name),
            )
    data.check_flags(flags)


def test_batches(source, flags):
    """The test split in batches of dict elements, with masks where available.

    The embedded dataset has boxes and masks for the same images: both are
    read, in the same order, and zipped, so that one pass gives every metric.
    """
    test = source.elements("test", flags.max_images)
    masks = None if source.override is not None else source.masks()
    if masks is not None:
        mask_elements = masks.elements("test", flags.max_images).map(
            lambda e: {
                "mask": e["mask"],
                "ignore": e["ignore"],
                "mask_id": e["image_id"],
            }
        )
        test = tf.data.Dataset.zip((test, mask_elements)).map(lambda a, b: {**a, **b})
    return test.batch(flags.batch_size).prefetch(tf.data.AUTOTUNE)


def evaluate_batches(model, batches, flags, figures, num_images=None, pairs=None):
    """The per-batch evaluation of every method on both branches.

    `kd.metrics.CAMEvaluation` runs the protocol (docs/method.md,
    "Evaluation protocol"): both heads' predictions (Top-1 Cls), the maps of
    the ground-truth class for the WSOL metrics (boxes as `load_wsol` pads
    them, unclipped, as wsolevaluation makes them; masks), the maps of the
    predicted class for fidelity. The first images and their maps go to
    `figures`.

    Args:
        model: a DualSigmoidModel.
        batches: dict batches as `test_batches` gives them.
        flags: namespace with methods, metrics, seed, scorecam_channels and
            confidence.
        figures: a `_Figures` collecting the figures' images and maps.
        num_images: number of images, for the progress bar (None: unknown).
        pairs: None, or batches of two-object images ("image", "labels"
            (B, 2), "boxes" (B, 2, 4)) for the class-discrimination test.

    Returns:
        The `kd.metrics.CAMEvaluation` holding every batch's outcomes.

    Raises:
        ValueError: if `batches` is empty.
    """
    causal = tuple(m for m in flags.metrics if m in CAUSAL_METRICS)
    wsol = "wsol" in flags.metrics
    evaluation = kd.metrics.CAMEvaluation(
        model,
        list(flags.methods),
        branches=BRANCHES,
        confidence=flags.confidence,
        cam_options={"scorecam": {"max_channels": flags.scorecam_channels}}
        if "scorecam" in flags.methods
        else None,
        causal_metrics=causal,
        causal_options={"road": {"seed": flags.seed}} if "road" in causal else None,
        fidelity_metrics="fidelity" in flags.metrics,
    )
    logits_fn = tf.function(model.logits, reduce_retracing=True)
    progress = keras.utils.Progbar(num_images, unit_name="image")
    seen = 0
    for batch in batches:
        images = batch["image"]
        labels = batch["label"].numpy().astype(np.int64)
        boxes = batch["boxes"].numpy() if wsol and "boxes" in batch else None
        has_masks = wsol and "mask" in batch
        maps = evaluation.update(
            images,
            labels,
            boxes=boxes,
            num_boxes=batch["num_boxes"].numpy() if boxes is not None else None,
            masks=batch["mask"].numpy() if has_masks else None,
            ignore=batch["ignore"].numpy() if has_masks else None,
        )
        if figures.room() > 0:
            logits = logits_fn(images)
            predicted = {b: np.argmax(logits[b].numpy(), axis=-1) for b in BRANCHES}
            gt_boxes = _gt_boxes(batch) if boxes is not None else None
            shown = figures.add_images(
                images.numpy(), _captions(logits, labels, predicted), gt_boxes
            )
            for method, by_branch in maps.items():
                for branch, branch_maps in by_branch.items():
                    figures.add_maps(method, branch, branch_maps, shown)
        seen += len(labels)
        progress.add(len(labels))
    if seen == 0:
        raise ValueError("The test split is empty: nothing to evaluate.")
    for batch in pairs if pairs is not None else ():
        evaluation.update_pairs(
            batch["image"], batch["labels"].numpy(), batch["boxes"].numpy()
        )
    return evaluation


def _captions(logits, labels, predicted):
    """ "true y | pred k (p)" for every image of a batch (softmax head)."""
    probs = tf.nn.softmax(logits["softmax"]).numpy()
    return [
        f"true {y} | pred {p} ({probs[i, p]:.2f})"
        for i, (y, p) in enumerate(zip(labels, predicted["softmax"], strict=True))
    ]


def write_outputs(results, figures, output_dir):
    """Writes results.json, report.md and figures/<method>.png to `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    files.write_json(os.path.join(output_dir, RESULTS_FILE), results)
    with open(os.path.join(output_dir, REPORT_FILE), "w") as f:
        f.write(format_report(results))
    paths = figures.save(os.path.join(output_dir, FIGURES_DIR), FIGURE_BOX_THRESHOLD)
    logging.info(
        "Wrote results.json, report.md and %d figures to %s", len(paths), output_dir
    )


def _delta_cell(ours, base, delta):
    """ "ours (+d)", with * when the delta's paired interval excludes 0."""
    cell = f"{ours:.2f} ({ours - base:+.2f}"
    if delta is not None:
        low, high = delta["CI"]
        if low > 0 or high < 0:
            cell += "*"
    return cell + ")"


def format_report(results):
    """A paper-style Markdown table: baseline row, "+ sigmoid branch" row, deltas."""
    first = next(iter(results["methods"].values()))["softmax"]
    columns = [k for k in REPORT_METRICS if k in first]
    header = [
        "Method",
        *[f"{c} {'↓' if c in LOWER_IS_BETTER else '↑'}" for c in columns],
    ]
    has_intervals = any("delta" in m for m in results["methods"].values())
    note = (
        " * : the delta's paired-bootstrap 95% interval excludes 0."
        if has_intervals
        else ""
    )
    lines = [
        f"# {results['dataset']}: softmax baseline vs + sigmoid branch",
        "",
        f"{results['num_images']} test images. Top-1 Cls: softmax "
        f"{results['top1_cls']['softmax']:.2f}%, sigmoid branch "
        f"{results['top1_cls']['sigmoid']:.2f}% (predictions come from the softmax "
        "head, unchanged). Percentages (ROAD: confidence difference; AUCs in "
        f"[0, 1]); deltas in parentheses.{note}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for method, by_branch in results["methods"].items():
        base, ours = by_branch["softmax"], by_branch["sigmoid"]
        deltas = by_branch.get("delta", {})
        title = METHOD_TITLES.get(method, method)
        lines.append(
            "| " + " | ".join([title, *[f"{base[c]:.2f}" for c in columns]]) + " |"
        )
        cells = [_delta_cell(ours[c], base[c], deltas.get(c)) for c in columns]
        lines.append("| " + " | ".join(["+ sigmoid branch", *cells]) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    results = run(flags_lib.from_absl(SPEC))
    logging.info("\n%s", format_report(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
