"""FinerCAM: Grad-CAM of the target logit minus its most similar classes'."""

from keras import ops

from keras_dualsig._errors import check_positive_int, invalid
from keras_dualsig.cams.grad_cam import GradCAM


class FinerCAM(GradCAM):
    """Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309).

    As pytorch-grad-cam's `FinerCAM` with its defaults (base method Grad-CAM,
    `comparison_categories=[1, 2, 3]`, `alpha=1`): the explained score is
    `sum_{j in S} (z_k - alpha z_j)`, with S the `comparisons` classes whose
    logits are closest to the target's, `|z_j - z_k|` smallest (the target
    itself excluded), and the map is Grad-CAM's on that score: it shows what
    tells class k apart from the classes it is confused with. The logits
    compared and differentiated are the explained branch's: on the sigmoid
    branch the pre-sigmoid logits, each an independent one-vs-rest score
    (Oh & Noh, BMVC 2025, arXiv:2511.05590), so the difference is a
    margin between one-vs-rest evidences. With fewer than `comparisons + 1`
    classes all other classes are compared. See `BaseCAM` for the call.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name(s); default the head's input.
        reshape: the token-grid layout of a transformer layer, as `BaseCAM`.
        comparisons: how many similar classes are subtracted (3).
        alpha: the weight of their logits (1.0).

    Example:
    >>> maps = kd.cams.FinerCAM(dual)(images)
    """

    def __init__(self, model, layer=None, *, comparisons=3, alpha=1.0, reshape=None):
        super().__init__(model, layer, reshape=reshape)
        self.comparisons = check_positive_int(comparisons, "comparisons")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise invalid("alpha", "a number", alpha)
        self.alpha = float(alpha)

    def target_scores(self, logits, target, branch):
        logits = ops.cast(logits[branch], "float32")
        count = min(self.comparisons, logits.shape[-1] - 1)
        own = ops.take_along_axis(logits, target[:, None], axis=1)
        distance = ops.abs(logits - own)
        # The target itself is never compared (its distance is 0).
        is_target = ops.one_hot(target, logits.shape[-1]) > 0
        distance = ops.where(is_target, float("inf"), distance)
        _, similar = ops.top_k(-distance, count)
        others = ops.take_along_axis(logits, similar, axis=1)
        return ops.sum(own - self.alpha * others, axis=1)
