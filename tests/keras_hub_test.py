"""keras-hub ImageClassifier tasks through `kd.dual_sigmoid` and the CAMs.

Every task is a tiny random-init config built from explicit arguments (no
preset, no download), built once per module. For each: the softmax output is
bit-identical to the task's, one `fit` step trains only the sigmoid branch,
Grad-CAM maps have the input's size, and the `.keras` file reloads with
safe_mode=True. Every CAM variant on tokens, on a plain-Keras token model:
tests/cams/tokens_test.py (the same reshape path). A ViT built by hand in plain Keras goes through the same path.
keras-hub's own `.keras` round trip of each task works at these configs.
"""

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams

keras_hub = pytest.importorskip("keras_hub")
models = keras_hub.models

SIZE = 32
CLASSES = 3


def _resnet():
    backbone = models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(SIZE, SIZE, 3),
    )
    return models.ResNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _vgg():
    backbone = models.VGGBackbone(
        stackwise_num_repeats=[1, 1],
        stackwise_num_filters=[4, 8],
        image_shape=(SIZE, SIZE, 3),
    )
    # The head is a nested Sequential: fc1 (7x7 conv) -> fc2 -> pooling ->
    # predictions; dual_sigmoid walks into it (the head starts at its input).
    return models.VGGImageClassifier(
        backbone=backbone, num_classes=CLASSES, pooling_hidden_dim=8
    )


def _densenet():
    backbone = models.DenseNetBackbone(
        stackwise_num_repeats=[1, 1], growth_rate=4, image_shape=(SIZE, SIZE, 3)
    )
    return models.DenseNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _xception():
    backbone = models.XceptionBackbone(
        stackwise_conv_filters=[[8, 8], [16, 16]],
        stackwise_pooling=[False, True],
        image_shape=(SIZE, SIZE, 3),
    )
    return models.XceptionImageClassifier(backbone=backbone, num_classes=CLASSES)


def _efficientnet():
    backbone = models.EfficientNetBackbone(
        width_coefficient=1.0,
        depth_coefficient=1.0,
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        min_depth=None,
        use_depth_divisor_as_min_depth=True,
        dropout=0,
        input_shape=(SIZE, SIZE, 3),
    )
    return models.EfficientNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _mobilenet():
    backbone = models.MobileNetBackbone(
        stackwise_expansion=[[16], [24]],
        stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]],
        stackwise_kernel_size=[[3], [3], [1]],
        stackwise_num_strides=[[2], [1], [1]],
        stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]],
        stackwise_padding=[[1], [1], [1]],
        output_num_filters=32,
        input_activation="hard_swish",
        output_activation="hard_swish",
        input_num_filters=8,
        image_shape=(SIZE, SIZE, 3),
        depthwise_filters=8,
        depthwise_stride=2,
        depthwise_residual=False,
        squeeze_and_excite=0.5,
        last_layer_filter=16,
    )
    return models.MobileNetImageClassifier(
        backbone=backbone, num_classes=CLASSES, num_features=16
    )


def _cspnet():
    backbone = models.CSPNetBackbone(
        stem_filters=8,
        stem_kernel_size=3,
        stem_strides=1,
        stackwise_strides=2,
        stackwise_depth=[1, 1],
        stackwise_num_filters=[8, 16],
        image_shape=(SIZE, SIZE, 3),
        down_growth=True,
        bottle_ratio=(0.5,) + (1.0,),
        block_ratio=(1.0,) + (0.5,),
        expand_ratio=(2.0,) + (1.0,),
        block_type="dark_block",
        stage_type="csp",
    )
    return models.CSPNetImageClassifier(backbone=backbone, num_classes=CLASSES)


def _hgnetv2():
    backbone = models.HGNetV2Backbone(
        depths=[1, 1],
        embedding_size=8,
        hidden_sizes=[16, 32],
        stem_channels=[3, 8, 8],
        hidden_act="relu",
        use_learnable_affine_block=False,
        stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True],
        use_lightweight_conv_block=[False, False],
        image_shape=(SIZE, SIZE, 3),
    )
    return models.HGNetV2ImageClassifier(
        backbone=backbone, preprocessor=None, num_classes=CLASSES
    )


def _vit(pooling="token"):
    backbone = models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    return models.ViTImageClassifier(
        backbone=backbone, num_classes=CLASSES, pooling=pooling
    )


def _deit():
    backbone = models.DeiTBackbone(
        image_shape=(SIZE, SIZE, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
    )
    return models.DeiTImageClassifier(backbone=backbone, num_classes=CLASSES)


def _swin():
    backbone = models.SwinTransformerBackbone(
        image_shape=(SIZE, SIZE, 3),
        embed_dim=8,
        depths=(1, 1),
        num_heads=(1, 2),
        window_size=2,
        patch_size=4,
    )
    return models.SwinTransformerImageClassifier(backbone=backbone, num_classes=CLASSES)


def _mit():
    backbone = models.MiTBackbone(
        layerwise_depths=[1, 1],
        image_shape=(SIZE, SIZE, 3),
        hidden_dims=[4, 8],
        num_layers=2,
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[8, 4],
        max_drop_path_rate=0.1,
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
    )
    return models.MiTImageClassifier(backbone=backbone, num_classes=CLASSES)


def _mobilenet_v5():
    backbone = models.MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir"]],
        stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]],
        stackwise_strides=[[2], [2]],
        stackwise_act_layers=[["relu"], ["relu"]],
        stackwise_exp_ratios=[[2.0], [2.0]],
        stackwise_se_ratios=[[0.0], [0.0]],
        stackwise_dw_kernel_sizes=[[0], [3]],
        stackwise_dw_start_kernel_sizes=[[0], [0]],
        stackwise_dw_end_kernel_sizes=[[0], [0]],
        stackwise_exp_kernel_sizes=[[3], [0]],
        stackwise_pw_kernel_sizes=[[1], [0]],
        stackwise_num_heads=[[0], [0]],
        stackwise_key_dims=[[0], [0]],
        stackwise_value_dims=[[0], [0]],
        stackwise_kv_strides=[[0], [0]],
        stackwise_use_cpe=[[False], [False]],
        image_shape=(SIZE, SIZE, 3),
        stem_size=8,
        use_msfa=False,
    )
    return models.MobileNetV5ImageClassifier(backbone=backbone, num_classes=CLASSES)


BUILDERS = {
    "resnet": _resnet,
    "vgg": _vgg,
    "densenet": _densenet,
    "xception": _xception,
    "efficientnet": _efficientnet,
    "mobilenet": _mobilenet,
    "cspnet": _cspnet,
    "hgnetv2": _hgnetv2,
    "vit": _vit,
    "deit": _deit,
    "swin": _swin,
    "mit": _mit,
    "mobilenet_v5": _mobilenet_v5,
}

_TASKS = {}


def _task(name):
    """Each task built once per test session (they are not modified)."""
    if name not in _TASKS:
        keras.utils.set_random_seed(0)
        _TASKS[name] = BUILDERS[name]()
    return _TASKS[name]


_DUALS = {}


def _dual(name):
    """One dual model per task (the branch may have been trained a step)."""
    if name not in _DUALS:
        _DUALS[name] = kd.dual_sigmoid(_task(name), seed=0)
    return _DUALS[name]


def _images(batch=2):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (batch, SIZE, SIZE, 3)).astype("float32")


def _values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


@pytest.mark.parametrize("name", list(BUILDERS))
# MiT's attention runs a softmax over a size-1 axis on 32 px inputs.
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")
def test_task(name, tmp_path):
    task = _task(name)
    images = _images()
    dual = _dual(name)
    # The softmax output is the task's, bit for bit.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dual(images)["softmax"]),
        keras.ops.convert_to_numpy(task(images)),
    )
    # One fit step trains the sigmoid branch only.
    frozen = _values(task.weights)
    branch = _values(dual.trainable_weights)
    assert not {id(v) for v in dual.trainable_weights} & {id(v) for v in task.weights}
    # No XLA: compiling costs more than one step of a tiny model runs.
    dual.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
    dual.fit(images, np.array([0, 2]), epochs=1, batch_size=2, verbose=0)
    for before, after in zip(frozen, _values(task.weights), strict=True):
        np.testing.assert_array_equal(before, after)
    assert any(
        not np.array_equal(b, a)
        for b, a in zip(branch, _values(dual.trainable_weights), strict=True)
    )
    # Grad-CAM on the sigmoid branch: one map per image, at the input size.
    maps = cams.GradCAM(dual)(images)
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and 0.0 <= maps.min() and maps.max() <= 1.0
    # The .keras file reloads with safe_mode=True, same outputs bit for bit
    # (eager calls: tracing `predict` twice costs more than the rest).
    path = str(tmp_path / f"{name}.keras")
    dual.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, kd.DualSigmoidModel)
    expected, actual = dual(images), loaded(images)
    for key in ("softmax", "sigmoid"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(actual[key]),
            keras.ops.convert_to_numpy(expected[key]),
        )


def test_swin_mean_head_cam_is_grad_cam():
    # Mean over tokens -> Dense: dz/dA = W_k / N at every token, so Grad-CAM's
    # weights are CAM's divided by N and the normalised maps agree.
    dual = _dual("swin")
    images = _images()
    np.testing.assert_allclose(
        cams.CAM(dual)(images, 1), cams.GradCAM(dual)(images, 1), atol=1e-5
    )
    # An inner layer: the backbone's 8 x 8 patch grid, before any merging
    # (the halved grids of later stages: tests/cams/tokens_test.py).
    maps = cams.LayerCAM(dual, layer="pos_drop")(images, resize=False)
    assert maps.shape == (2, 8, 8)


def test_vit_token_layers():
    dual = _dual("vit")
    images = _images()
    cam = cams.GradCAM(dual)
    # A class-token head: the input of the last token mixing (the encoder).
    assert cam.layer == "vit_patching_and_embedding"
    assert np.ptp(cam(images, resize=False), axis=(1, 2)).min() > 0
    with pytest.raises(ValueError, match="argument `model`.*class-token"):
        cams.CAM(dual)
    # At the head's input the gradient is zero on every patch token.
    with pytest.raises(ValueError, match="argument `layer`.*class token"):
        cams.GradCAM(dual, layer=dual.feature_layer)

    # A `reshape=` callable that does what the inference does.
    def reshape(tokens):
        return keras.ops.reshape(tokens[:, 1:], (-1, 4, 4, tokens.shape[-1]))

    np.testing.assert_array_equal(
        cams.GradCAM(dual, reshape=reshape)(images), cam(images)
    )
    with pytest.raises(ValueError, match="argument `reshape`.*rank 4"):
        cams.GradCAM(dual, reshape=lambda tokens: tokens[:, 1:])
    with pytest.raises(ValueError, match="argument `reshape`"):
        cams.GradCAM(dual, reshape="grid")


def test_mixed_precision():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        task = _vit("gap")
        dual = kd.dual_sigmoid(task, seed=0)
    finally:
        keras.config.set_dtype_policy(policy)
    images = _images()
    outputs = dual(images)
    assert keras.backend.standardize_dtype(outputs["sigmoid"].dtype) == "float32"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(outputs["softmax"]),
        keras.ops.convert_to_numpy(task(images)),
    )
    for method in ("cam", "gradcam"):
        maps = cams.get(method)(dual)(images)
        assert maps.dtype == np.float32 and np.isfinite(maps).all()
        assert maps.shape == (2, SIZE, SIZE) and maps.max() <= 1.0


@keras.saving.register_keras_serializable(package="keras_dualsig_tests")
class ClassToken(keras.layers.Layer):
    """Prepends a learned class token: (B, N, D) -> (B, N + 1, D)."""

    def build(self, input_shape):
        self.token = self.add_weight(shape=(1, 1, input_shape[-1]), name="token")

    def call(self, tokens):
        token = keras.ops.broadcast_to(
            keras.ops.cast(self.token, tokens.dtype),
            (keras.ops.shape(tokens)[0], 1, tokens.shape[-1]),
        )
        return keras.ops.concatenate([token, tokens], axis=1)


def _hand_vit(dim=16):
    """Patch embedding, class token, one pre-norm encoder block, LayerNorm,
    the class token's slice, Dense: a ViT in plain Keras."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(dim, 8, strides=8, name="patches")(inputs)
    x = keras.layers.Reshape((16, dim))(x)  # (B, 4, 4, D) -> (B, 16, D)
    x = ClassToken(name="class_token")(x)
    y = keras.layers.LayerNormalization(name="norm1")(x)
    y = keras.layers.MultiHeadAttention(2, dim // 2, name="attention")(y, y)
    x = keras.layers.Add()([x, y])
    y = keras.layers.LayerNormalization(name="norm2")(x)
    y = keras.layers.Dense(2 * dim, activation="gelu")(y)
    y = keras.layers.Dense(dim)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    x = x[:, 0]  # (B, 17, D) -> (B, D): the class token
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="hand_vit")


def test_hand_built_vit():
    keras.utils.set_random_seed(0)
    model = _hand_vit()
    dual = kd.dual_sigmoid(model, seed=0)
    images = _images()
    assert dual.feature_layer == "final_norm"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(dual(images)["softmax"]),
        keras.ops.convert_to_numpy(model(images)),
    )
    cam = cams.GradCAM(dual)
    # pytorch-grad-cam's `blocks[-1].norm1`: the last attention's input.
    assert cam.layer == "norm1"
    maps = cam(images, resize=False)
    assert maps.shape == (2, 4, 4) and np.ptp(maps, axis=(1, 2)).min() > 0
    # Without a backbone the grid comes from the count: 17 = 1 + 4 x 4.
    assert cams.HiResCAM(dual, layer="class_token")(images).shape == (2, SIZE, SIZE)
    with pytest.raises(ValueError, match="argument `model`.*class-token"):
        cams.CAM(dual)
