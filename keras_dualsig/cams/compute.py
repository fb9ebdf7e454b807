"""Many CAM methods, both branches, from one forward and one backward pass."""

import functools
import weakref

import numpy as np
from keras import ops

from keras_dualsig import _backend
from keras_dualsig._errors import (
    check_bool,
    check_class_index,
    check_positive_int,
    invalid,
)
from keras_dualsig.cams.base import BaseCAM, CamRequest, _postprocess

# model -> {(methods, layer, options): _SharedPass}; dropped with the model.
_CACHE = weakref.WeakKeyDictionary()


def _shares_pass(cam):
    """Whether a method reads only A and dz/dA of the default target logit."""
    return (
        type(cam).target_scores is BaseCAM.target_scores
        and not cam.uses_hessian
        and len(cam._layers) == 1
    )


class _SharedPass:
    """The CAM objects of several methods and their joint compiled functions."""

    def __init__(self, model, methods, layer, options):
        from keras_dualsig import cams  # the registry; avoids a cycle

        self.cams = {}
        for name in methods:
            cls = cams.get(name)
            self.cams[name] = cls(model, layer, **options.get(name, {}))
        self.shared = [name for name, cam in self.cams.items() if _shares_pass(cam)]
        self.own = [name for name in self.cams if name not in self.shared]
        self._compiled = {}
        if self.shared:
            # The pass is run by a gradient method if there is one.
            self._lead = next(
                (self.cams[n] for n in self.shared if self.cams[n].uses_gradients),
                self.cams[self.shared[0]],
            )

    def _batch(
        self, images, class_index, *, use_argmax, branch, positive_weights, **post
    ):
        lead = self._lead
        lead._use_layer(0)
        images = ops.convert_to_tensor(images)
        class_index = ops.convert_to_tensor(class_index, "int32")
        activations, gradients, target = lead._explain(
            images, class_index, use_argmax, branch
        )
        request = CamRequest(images, target, branch, positive_weights)
        size = tuple(images.shape[1:3])
        maps = []
        for name in self.shared:
            cam = self.cams[name]
            raw = cam.activation_map(
                activations, gradients if cam.uses_gradients else None, request
            )
            maps.append(_postprocess(ops.cast(raw, "float32"), size, **post))
        return tuple(maps)

    def shared_maps(self, images, indices, flags, batch_size):
        """{name: maps} of the shared methods for one branch."""
        key = tuple(sorted(flags.items()))
        if key not in self._compiled:
            self._compiled[key] = _backend.compile(
                functools.partial(self._batch, **flags), self._lead._variables
            )
        compiled = self._compiled[key]
        chunks = [
            [
                ops.convert_to_numpy(m)
                for m in compiled(
                    images[start : start + batch_size],
                    indices[start : start + batch_size],
                )
            ]
            for start in range(0, int(images.shape[0]), batch_size)
        ]
        return {
            name: np.concatenate([chunk[i] for chunk in chunks]).astype(np.float32)
            for i, name in enumerate(self.shared)
        }


def compute(
    model,
    images,
    methods=None,
    branches=None,
    class_index=None,
    *,
    layer=None,
    positive_weights=None,
    normalize=True,
    resize=True,
    batch_size=None,
    options=None,
):
    """Maps of several CAM methods on several branches, sharing the passes.

    Every method that reads only the feature map A and the gradient of the
    target logit (all but FinerCAM, whose score differs, ShapleyCAM, which
    needs a second backward pass, and `layer=[...]`) is computed from ONE
    forward and ONE backward pass per branch and batch, in one compiled
    function; Score-CAM relatives and AblationCAM add their own forward
    passes of masked inputs or ablated channels inside it. The other methods
    run their own call. The maps equal those of separate calls
    `kd.cams.get(name)(model, layer, **options[name])(images, class_index,
    branch=branch, ...)`. The CAM objects and compiled functions are kept
    (per model, methods, layer and options) for the next call.

    Args:
        model: a `kd.DualSigmoidModel` or a plain Keras classifier.
        images: (B, H, W, channels) the model accepts.
        methods: names as `kd.cams.get` accepts; None means all of `NAMES`
            except the costly Score-CAM relatives ("scorecam", "sscam",
            "iscam") and "ablationcam" (name them to get them).
        branches: a list of "sigmoid" / "softmax"; None means both on a
            DualSigmoidModel, ["softmax"] on a plain classifier.
        class_index: as `BaseCAM.__call__` (None: the softmax argmax).
        layer: the explained layer (one name), as the constructors.
        positive_weights, normalize, resize, batch_size: as `BaseCAM.__call__`
            (positive_weights None: True on the sigmoid branch).
        options: {method name: constructor keyword arguments}, e.g.
            `{"scorecam": {"max_channels": 64}}`.

    Returns:
        {method: {branch: float32 numpy (B, H, W)}}, keyed by the names given.

    Raises:
        ValueError: (Keras template) for an unknown method or branch, and as
            the constructors and calls.

    Example:
    >>> maps = kd.cams.compute(dual, images, methods=["gradcam", "layercam"])
    >>> maps["gradcam"]["sigmoid"].shape
    (B, H, W)
    """
    from keras_dualsig import cams

    if methods is None:
        costly = ("scorecam", "sscam", "iscam", "ablationcam")
        methods = [name for name in cams.NAMES if name not in costly]
    if isinstance(methods, str) or not methods:
        raise invalid("methods", "None or a non-empty list of method names", methods)
    methods = list(methods)
    for name in methods:
        cams.get(name)
    options = {} if options is None else dict(options)
    if not isinstance(options, dict) or any(
        not isinstance(value, dict) for value in options.values()
    ):
        raise invalid("options", "None or a dict {method: {keyword: value}}", options)
    if isinstance(layer, (list, tuple)):
        raise invalid("layer", "None or one layer name", layer)
    key = (
        tuple(methods),
        layer,
        tuple(
            sorted((name, tuple(sorted(kw.items()))) for name, kw in options.items())
        ),
    )
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = _SharedPass(model, methods, layer, options)
    shared = per_model[key]
    first = next(iter(shared.cams.values()))
    if branches is None:
        branches = ["sigmoid", "softmax"] if first.is_dual else ["softmax"]
    if isinstance(branches, str):
        branches = [branches]
    call = {
        "normalize": normalize,
        "resize": resize,
        "batch_size": batch_size,
    }
    results = {name: {} for name in methods}
    checked = first._check_images(images)
    batch = int(checked.shape[0])
    size = check_positive_int(batch_size, "batch_size", allow_none=True)
    size = batch if size is None else size
    indices = check_class_index(class_index, batch, first.num_classes)
    for branch in branches:
        first.classifier.check_branch(branch)
        positive = branch == "sigmoid" if positive_weights is None else positive_weights
        for name in shared.own:
            results[name][branch] = shared.cams[name](
                checked, class_index, branch=branch, positive_weights=positive, **call
            )
        if not shared.shared:
            continue
        flags = {
            "use_argmax": class_index is None,
            "branch": branch,
            "positive_weights": check_bool(positive, "positive_weights"),
            "normalize": check_bool(normalize, "normalize"),
            "resize": check_bool(resize, "resize"),
        }
        batch_indices = np.zeros((batch,), np.int32) if indices is None else indices
        for name, maps in shared.shared_maps(
            checked, batch_indices, flags, size
        ).items():
            results[name][branch] = maps
    return results
