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

Shards (e.g. on a batch system): each of N runs evaluates a contiguous block
of the test batches and writes its evaluator states (state.npz, its figure
sample, shard.json) instead of the results; --merge reads them, in shard
order, and writes results.json, report.md, outcomes.npz and figures of the
whole set, equal to one run's (kd.metrics.CAMEvaluation.merge):

  python -m training.evaluate --model=M --num_shards=2 --shard_index=0 \
      --output_dir=runs/eval/shard_0   # and --shard_index=1 ... shard_1
  python -m training.evaluate --model=M --output_dir=runs/eval/all \
      --merge=runs/eval/shard_0,runs/eval/shard_1

--strategy=mirrored (every local GPU, or --num_cpu_devices) gives each device
a contiguous block of the batches, --strategy=multi_worker (TF_CONFIG) each
worker; the states are merged in order (all-gathered across workers) and the
chief writes the same files as one process would.
"""

import io
import json
import os
import types
from concurrent import futures

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
# The costly Score-CAM relatives and AblationCAM (many forward passes per
# image) are opt-in: name them, or --methods=all.
COSTLY_METHODS = kd.metrics.cam_evaluation.COSTLY_METHODS
DEFAULT_METHODS = [m for m in kd.cams.NAMES if m not in COSTLY_METHODS]
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
    "gradcamelementwise": "Grad-CAM element-wise",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "ablationcam": "AblationCAM",
    "kpcacam": "KPCA-CAM",
    "shapleycam": "ShapleyCAM",
    "finercam": "FinerCAM",
    "fem": "FEM",
    "randomcam": "RandomCAM",
    "sscam": "SS-CAM",
    "iscam": "IS-CAM",
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
    flag(
        "methods",
        DEFAULT_METHODS,
        "CAM variants (names of kd.cams.get), or 'all'. Default: all but "
        + ", ".join(COSTLY_METHODS)
        + ".",
    ),
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
    flag(
        "num_shards",
        1,
        "Split the test batches into this many contiguous shards; with more "
        "than 1, this run evaluates --shard_index's and writes its states.",
        minimum=1,
    ),
    flag("shard_index", 0, "The shard this run evaluates (0-based).", minimum=0),
    flag(
        "merge",
        [],
        "Output directories of shard runs: merge their states and write the "
        "results of the whole set (no evaluation).",
    ),
]
# Shared flags evaluate does not use: it compiles nothing and writes to
# --output_dir. Other values than the defaults are refused.
UNUSED_FLAGS = ("model_dir", "jit_compile", "tpu")
# --strategy values evaluate runs (mirrored: one block of batches per device).
EVALUATE_STRATEGIES = ("default", "mirrored", "multi_worker")
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"
OUTCOMES_FILE = "outcomes.npz"
FIGURES_DIR = "figures"
# What a shard run writes (--num_shards > 1) and --merge reads.
SHARD_FILE = "shard.json"
STATE_FILE = "state.npz"
FIGURE_SAMPLE_FILE = "figure_sample.npz"
# The flags a merge takes from the shards (they fix the evaluation's content).
SHARD_FLAGS = ("methods", "confidence", "metrics", "scorecam_channels")
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

    def state(self):
        """The sample as plain arrays (what a shard run saves)."""
        has_boxes = bool(self.images) and all(b is not None for b in self.gt_boxes)
        out = {
            "images": np.array(self.images),
            "captions": np.array(self.captions, dtype=str),
            "has_boxes": np.array(has_boxes),
        }
        if has_boxes:
            out["gt_boxes"] = np.concatenate(self.gt_boxes).reshape(-1, 4)
            out["gt_counts"] = np.array([len(b) for b in self.gt_boxes], np.int64)
        for method, by_branch in self.maps.items():
            for branch, maps in by_branch.items():
                out[f"maps/{method}/{branch}"] = np.array(maps)
        return out

    def add_state(self, state):
        """Appends a saved sample (the shards in order) while there is room."""
        n = min(self.room(), len(state["captions"]))
        if n <= 0:
            return
        gt_boxes = None
        if bool(state["has_boxes"]):
            splits = np.cumsum(state["gt_counts"])[:-1]
            gt_boxes = np.split(state["gt_boxes"], splits)
        self.add_images(list(state["images"]), list(state["captions"]), gt_boxes)
        for key in state:
            if key.startswith("maps/"):
                _, method, branch = key.split("/")
                self.add_maps(method, branch, state[key], n)

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
    if flags.merge:
        return merge_shards(flags)
    info = models.read_model_info(flags.model, "model")
    strategy = devices.setup(flags)
    model = models.load_dual(flags.model)
    source = data.resolve_for(
        model, flags.model, info, flags, datasets_override, "model"
    )
    replicas = (
        list(strategy.extended.worker_devices) if flags.strategy == "mirrored" else []
    )
    if flags.strategy == "multi_worker":
        evaluation, figures = evaluate_workers(model, source, flags, strategy)
        if not devices.is_chief(strategy):  # The chief writes.
            return {"dataset": source.name, **evaluation.result()}
    elif len(replicas) > 1:
        evaluation, figures = evaluate_replicas(model, source, flags, replicas)
    else:
        evaluation, figures = evaluate_block(model, source, flags)
    if flags.num_shards > 1:
        return write_shard(evaluation, figures, source.name, flags)
    return finish(evaluation, figures, source.name, flags)


def evaluate_block(model, source, flags, replica=None):
    """Evaluates the shard of `flags` (the whole split without shards).

    Args:
        replica: None, or (index, count): evaluate only that replica's
            contiguous part of the shard's batches (`_batch_range`).

    Returns:
        (the `kd.metrics.CAMEvaluation`, the `_Figures` sample).
    """
    splits = _splits(flags, replica)
    figures = _Figures(flags.num_figure_images)
    num_images = source.count("test", flags.max_images)
    block = shard_block(num_images, flags, splits)
    pairs = None
    if "pairs" in flags.metrics:
        pairs = source.pairs(flags.batch_size, flags.max_images)
        if pairs is None and list(flags.metrics) != list(DEFAULT_FAMILIES):
            logging.warning(
                "--metrics has pairs, but %s has no two-object test images "
                "(the embedded dataset has them): no pairs test.",
                source.name,
            )
    if pairs is not None and splits:
        pairs = _shard_batches(pairs, splits)
    evaluation = evaluate_batches(
        model,
        test_batches(source, flags, block),
        flags,
        figures,
        num_images=block[1] if block else num_images,
        pairs=pairs,
        batch_offset=block[0] // flags.batch_size if block else 0,
    )
    return evaluation, figures


def evaluate_replicas(model, source, flags, replicas):
    """--strategy=mirrored: each device evaluates a contiguous block of batches.

    The shard's batches (all without --num_shards) are split again into one
    contiguous block per replica (`_batch_range`), each evaluated on its own
    thread under `tf.device(replica)`; their states are merged in order
    (`CAMEvaluation.merge`), so the numbers are those of one device.

    Returns:
        (the merged `kd.metrics.CAMEvaluation`, the merged `_Figures`).
    """
    num_batches = -(-source.count("test", flags.max_images) // flags.batch_size)
    first, stop = _batch_range(num_batches, _splits(flags))
    count = max(1, min(len(replicas), stop - first))

    def one(index):
        with tf.device(replicas[index]):
            return evaluate_block(model, source, flags, replica=(index, count))

    logging.info("Evaluating on %d replicas: %s", count, replicas[:count])
    with futures.ThreadPoolExecutor(count) as pool:
        parts = list(pool.map(one, range(count)))
    evaluation, _ = parts[0]
    evaluation.merge([part[0] for part in parts[1:]])
    figures = _Figures(flags.num_figure_images)
    for _, part_figures in parts:
        figures.add_state(part_figures.state())
    return evaluation, figures


def _worker_index(strategy):
    """(this worker's index, number of workers) in the TF_CONFIG cluster.

    The chief (if the cluster names one) is first, then the workers.
    """
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    tasks = [
        (kind, i)
        for kind in ("chief", "worker")
        for i in range(len(spec.get(kind, [])))
    ]
    if not tasks:  # No TF_CONFIG: one worker.
        return 0, 1
    return tasks.index((resolver.task_type, resolver.task_id)), len(tasks)


def _all_gather_bytes(strategy, payload):
    """Every worker's `payload` (bytes), in worker order, on every worker.

    The strategy's collective all-gather of the bytes as int32 tensors
    (collectives take no uint8), padded to the longest (sizes gathered
    first).
    """
    # One row per replica; a worker's local replicas carry the same value.
    local = max(1, len(strategy.extended.worker_devices))

    def gather(value):
        per_replica = strategy.run(lambda: tf.constant(value))
        return strategy.gather(per_replica, axis=0).numpy()[::local]

    sizes = gather(np.array([len(payload)], np.int64))
    padded = np.zeros((1, -(-int(sizes.max()) // 4) * 4), np.uint8)
    padded[0, : len(payload)] = np.frombuffer(payload, np.uint8)
    rows = gather(padded.view(np.int32)).view(np.uint8)
    return [row[:size].tobytes() for row, size in zip(rows, sizes, strict=True)]


def evaluate_workers(model, source, flags, strategy):
    """--strategy=multi_worker: each worker a contiguous block of batches.

    Worker w of W evaluates block w of the batches (of its shard with
    --num_shards); the states are gathered with the strategy's collective
    all-gather and merged in worker order on every worker, so the numbers
    are those of one process; only the chief writes them.

    Returns:
        (the merged `kd.metrics.CAMEvaluation`, the merged `_Figures`).
    """
    index, count = _worker_index(strategy)
    logging.info("Worker %d of %d evaluates its block of the batches", index, count)
    evaluation, figures = evaluate_block(model, source, flags, replica=(index, count))
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **_state_prefixed(evaluation.state(), "evaluation/"),
        **_state_prefixed(figures.state(), "figures/"),
    )
    merged = make_evaluation(model, flags)
    merged_figures = _Figures(flags.num_figure_images)
    for payload in _all_gather_bytes(strategy, buffer.getvalue()):
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            state = {key: archive[key] for key in archive.files}
        merged.merge(_state_part(state, "evaluation/"))
        merged_figures.add_state(_state_part(state, "figures/"))
    return merged, merged_figures


def _state_prefixed(state, prefix):
    return {prefix + key: value for key, value in state.items()}


def _state_part(state, prefix):
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def finish(evaluation, figures, dataset, flags):
    """Writes results.json, report.md, outcomes.npz and figures; returns results."""
    results = {
        "dataset": dataset,
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


def _splits(flags, replica=None):
    """The (index, count) splits of the batches this run evaluates, outermost first."""
    splits = [(flags.shard_index, flags.num_shards)] if flags.num_shards > 1 else []
    return splits + ([replica] if replica is not None else [])


def shard_block(num_images, flags, splits=None):
    """(first image, number of images) of this run's shard; None without shards.

    Shards are contiguous blocks of whole batches (shard i: batches
    [i * nb // N, (i + 1) * nb // N) of the nb batches; with
    --strategy=mirrored, each replica a block of its shard's in turn), so
    that every image is evaluated in the same batch as in one run, and the
    shards' states, merged in order, are that run's.

    Args:
        splits: (index, count) pairs, outermost first; default the shard of
            --num_shards / --shard_index.

    Raises:
        ValueError: (Keras template) for more shards than batches.
    """
    splits = _splits(flags) if splits is None else splits
    if not splits:
        return None
    num_batches = -(-num_images // flags.batch_size)
    if flags.num_shards > num_batches:
        raise invalid(
            "num_shards",
            f"at most the number of test batches ({num_batches}: {num_images} "
            f"images in batches of {flags.batch_size})",
            flags.num_shards,
        )
    first, stop = _batch_range(num_batches, splits)
    begin = first * flags.batch_size
    return begin, min(stop * flags.batch_size, num_images) - begin


def _batch_range(num_batches, splits):
    """[first, stop) batches of nested contiguous splits [(index, count), ...]."""
    first, stop = 0, num_batches
    for index, count in splits:
        size = stop - first
        first, stop = first + index * size // count, first + (index + 1) * size // count
    return first, stop


def _shard_batches(batches, splits):
    """The `splits` block of an already batched dataset."""
    first, stop = _batch_range(data._cardinality(batches), splits)
    return batches.skip(first).take(stop - first)


def write_shard(evaluation, figures, dataset, flags):
    """Writes a shard's states to --output_dir; returns what shard.json holds."""
    os.makedirs(flags.output_dir, exist_ok=True)
    evaluation.save(os.path.join(flags.output_dir, STATE_FILE))
    np.savez_compressed(
        os.path.join(flags.output_dir, FIGURE_SAMPLE_FILE), **figures.state()
    )
    info = {
        "dataset": dataset,
        "num_shards": flags.num_shards,
        "shard_index": flags.shard_index,
        "num_images": evaluation.result()["num_images"],
        **{name: getattr(flags, name) for name in SHARD_FLAGS},
    }
    info["methods"] = list(info["methods"])
    info["metrics"] = list(info["metrics"])
    files.write_json(os.path.join(flags.output_dir, SHARD_FILE), info)
    logging.info(
        "Shard %d/%d: %d images; states written to %s",
        flags.shard_index,
        flags.num_shards,
        info["num_images"],
        flags.output_dir,
    )
    return info


def read_shards(directories):
    """The shard.json of each directory, sorted by shard index, checked complete.

    Raises:
        ValueError: (Keras template) naming `merge` for a directory without
            shard.json, shards of different runs, or missing or repeated
            shards.
    """
    shards = []
    for directory in directories:
        path = os.path.join(directory, SHARD_FILE)
        if not os.path.exists(path):
            raise invalid(
                "merge",
                f"output directories of shard runs (each with a {SHARD_FILE})",
                received=f"{directory!r} without {SHARD_FILE}",
            )
        with open(path) as f:
            shards.append({**json.load(f), "directory": directory})
    shards.sort(key=lambda shard: shard["shard_index"])
    total = shards[0]["num_shards"]
    same = ("dataset", "num_shards", *SHARD_FLAGS)
    if [s["shard_index"] for s in shards] != list(range(total)) or any(
        s[key] != shards[0][key] for s in shards for key in same
    ):
        raise invalid(
            "merge",
            f"the {total} shards 0 ... {total - 1} of one run (same dataset, "
            f"--num_shards and {', '.join(SHARD_FLAGS)}), each once",
            received=", ".join(
                f"{s['directory']} (shard {s['shard_index']}/{s['num_shards']})"
                for s in shards
            ),
        )
    return shards


def merge_shards(flags):
    """--merge: the shards' states merged in shard order; writes the results."""
    shards = read_shards(flags.merge)
    flags = types.SimpleNamespace(
        **{**vars(flags), **{name: shards[0][name] for name in SHARD_FLAGS}}
    )
    devices.setup(flags)
    model = models.load_dual(flags.model)
    evaluation = make_evaluation(model, flags)
    figures = _Figures(flags.num_figure_images)
    for shard in shards:
        directory = shard["directory"]
        evaluation.merge(os.path.join(directory, STATE_FILE))
        with np.load(
            os.path.join(directory, FIGURE_SAMPLE_FILE), allow_pickle=False
        ) as sample:
            figures.add_state({key: sample[key] for key in sample.files})
    logging.info(
        "Merged %d shards: %d images", len(shards), evaluation.result()["num_images"]
    )
    return finish(evaluation, figures, shards[0]["dataset"], flags)


def check_methods(methods):
    """Refuses an empty --methods, unknown CAM names and repeated ones.

    Raises:
        ValueError: (Keras template) naming `methods`.
    """
    names = resolve_methods(methods)
    unknown = [m for m in names if m not in kd.cams.NAMES]
    if not names or unknown or len(set(names)) != len(names):
        raise invalid(
            "methods",
            "'all' or a non-empty list of distinct CAM names among "
            + ", ".join(kd.cams.NAMES),
            methods,
        )


def resolve_methods(methods):
    """The method list: `kd.cams.NAMES` for ["all"], else the names given."""
    names = list(methods)
    return list(kd.cams.NAMES) if names == ["all"] else names


def check_flags(flags):
    """Validates every flag at start (types, ranges, combinations).

    Raises:
        ValueError: (Keras template) naming the flag, its value and what is
            accepted.
    """
    flags_lib.validate(flags, SPEC)
    check_methods(flags.methods)
    flags.methods = resolve_methods(flags.methods)
    if not flags.model:
        raise invalid(
            "model", "the path of the stage-2 dual_sigmoid.keras", flags.model
        )
    if flags.shard_index >= flags.num_shards:
        raise invalid(
            "shard_index",
            f"an index in [0, --num_shards={flags.num_shards})",
            flags.shard_index,
        )
    if flags.merge and flags.num_shards != 1:
        raise invalid(
            "num_shards",
            "1 with --merge (the shards' own count is read from their files)",
            flags.num_shards,
        )
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
                "compiles nothing and writes to --output_dir)",
                getattr(flags, name),
            )
    if flags.strategy not in EVALUATE_STRATEGIES:
        raise invalid(
            "strategy",
            f"one of {EVALUATE_STRATEGIES} (TPUs: run shards with "
            "--num_shards / --shard_index and --merge)",
            flags.strategy,
        )
    devices.check_flags(flags)
    data.check_flags(flags)


def test_batches(source, flags, block=None):
    """The test split in batches of dict elements, with masks where available.

    The embedded dataset has boxes and masks for the same images: both are
    read, in the same order, and zipped, so that one pass gives every metric.
    `block`: None, or (first, count) the images of this run's shard.
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
    if block is not None:
        test = test.skip(block[0]).take(block[1])
    return test.batch(flags.batch_size).prefetch(tf.data.AUTOTUNE)


def make_evaluation(model, flags, batch_offset=0):
    """The `kd.metrics.CAMEvaluation` of the flags (methods, metrics, options).

    `batch_offset`: the index of the first batch (of a shard's block).
    """
    causal = tuple(m for m in flags.metrics if m in CAUSAL_METRICS)
    return kd.metrics.CAMEvaluation(
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
        # Per-image outcomes (a few hundred bytes per image and method-branch)
        # only when intervals or outcomes.npz need them: without, memory
        # does not grow with the data set.
        keep_outcomes=bool(flags.intervals or flags.save_outcomes),
        batch_offset=batch_offset,
    )


def evaluate_batches(
    model, batches, flags, figures, num_images=None, pairs=None, batch_offset=0
):
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
        batch_offset: the index of the first batch in the whole split (a
            shard's block), for ROAD's per-batch seeds.

    Returns:
        The `kd.metrics.CAMEvaluation` holding every batch's outcomes.

    Raises:
        ValueError: if `batches` is empty.
    """
    wsol = "wsol" in flags.metrics
    evaluation = make_evaluation(model, flags, batch_offset)
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
    if "methods" in results:  # Not for a shard's run (its states only).
        logging.info("\n%s", format_report(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
