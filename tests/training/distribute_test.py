"""Scale-out (issue 6, item 3): MirroredStrategy on two logical CPU devices and
MultiWorkerMirroredStrategy with two local workers give the single-device loss
trajectory and weights.

Stage 2 is the subject: its trunk is frozen (BatchNorm in inference mode), so
one device and two replicas compute the same function and the same gradient
(the mean of two half-batch gradients); only the summation order differs.
Stage 1 with trainable BatchNorm normalises each replica's half batch with its
own statistics, as any data-parallel BatchNorm does, so its trajectory differs
by more than rounding (see the training README section).

Each configuration runs as a subprocess: logical devices and the multi-worker
runtime must be set up before TensorFlow initialises.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from tensorflow.python.framework import config as tf_config

from training import flags as flags_lib
from training import train_classifier, train_sigmoid

REPO = Path(__file__).resolve().parents[2]

EPOCHS = 3
TIMEOUT_SECONDS = 240
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data):
    """Tiny data, a classifier and the single-device reference runs."""
    data = dict(tiny_data)
    # No dropout: replicas would draw their masks from one seed state, so the
    # masks of a two-replica step differ from those of one device.
    classifier = train_classifier.run(
        flags_lib.config(
            train_classifier.SPEC,
            **data,
            image_size=32,
            dropout=0.0,
            epochs=1,
            model_dir=str(tmp_path_factory.mktemp("classifier")),
        )
    )
    data = {**data, "classifier": classifier["model_path"], "learning_rate": 0.1}
    references = {
        cache: train_sigmoid.run(
            flags_lib.config(
                train_sigmoid.SPEC,
                **data,
                epochs=EPOCHS,
                cache_features=cache,
                model_dir=str(tmp_path_factory.mktemp("reference")),
            )
        )
        for cache in (False, True)
    }
    tf_config.disable_op_determinism()
    return data, references


def _command(data, model_dir, *extra):
    flags = [f"--{name}={value}" for name, value in data.items()]
    return [
        sys.executable,
        "-m",
        "training.train_sigmoid",
        *flags,
        f"--epochs={EPOCHS}",
        f"--model_dir={model_dir}",
        *extra,
    ]


def _env(tmp_dir, **extra):
    return {
        **os.environ,
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Where non-chief workers write (and must delete) their copies.
        "TMPDIR": str(tmp_dir),
        **extra,
    }


def _assert_same_training(model_dir, reference):
    history = json.loads((Path(model_dir) / "history.json").read_text())
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            history[key], reference["history"][key], rtol=TOLERANCE, err_msg=key
        )
    dual = keras.models.load_model(Path(model_dir) / "dual_sigmoid.keras")
    largest = 0.0
    for layer in dual.sigmoid_head:
        expected = reference["model"].get_layer(layer.name).get_weights()
        for a, b in zip(layer.get_weights(), expected, strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE)
            largest = max(largest, float(np.abs(a - b).max()))
    # Shown with `pytest -s`: the numbers the README quotes.
    print(
        f"\nloss {history['loss']} vs one device {reference['history']['loss']}; "
        f"largest weight difference {largest:.2e}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("cache_features", [False, True])
def test_mirrored_on_two_cpu_devices(setup, tmp_path, cache_features):
    data, references = setup
    extra = ["--strategy=mirrored", "--num_cpu_devices=2"]
    if cache_features:
        extra.append("--cache_features")
    result = subprocess.run(
        _command(data, tmp_path / "run", *extra),
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy over ['/device:CPU:0', '/device:CPU:1']" in result.stderr
    _assert_same_training(tmp_path / "run", references[cache_features])


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_resumes_and_only_the_chief_writes(setup, tmp_path):
    data, references = setup
    model_dir = tmp_path / "run"
    # A checkpoint after epoch 1 (one device): both workers must resume from it.
    train_sigmoid.run(
        flags_lib.config(train_sigmoid.SPEC, **data, epochs=1, model_dir=str(model_dir))
    )
    tf_config.disable_op_determinism()
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        tf_config_env = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")
        workers.append(
            (
                subprocess.Popen(
                    _command(data, model_dir, "--strategy=multi_worker"),
                    cwd=REPO,
                    env=_env(scratch, TF_CONFIG=json.dumps(tf_config_env)),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                ),
                log,
                scratch,
            )
        )
    try:
        for process, log, _ in workers:
            process.wait(timeout=TIMEOUT_SECONDS)
            log.close()
    finally:
        for process, _, _ in workers:
            if process.poll() is None:
                process.kill()
    for index, (process, log, scratch) in enumerate(workers):
        text = Path(log.name).read_text()
        assert process.returncode == 0, text[-3000:]
        assert "after epoch 1." in text
        assert f"epochs 2-{EPOCHS} of {EPOCHS}" in text
        assert f"chief={index == 0}" in text
        assert os.listdir(scratch) == []  # The non-chief deleted its copies.

    assert sorted(os.listdir(model_dir)) == [
        "checkpoint",
        "dual_sigmoid.keras",
        "history.json",
        "logs",
        "model_info.json",
    ]
    assert sorted(os.listdir(model_dir / "checkpoint")) == [
        f"epoch-{EPOCHS - 1:04d}.keras",
        f"epoch-{EPOCHS:04d}.keras",
        "state.json",
        "state.previous.json",
    ]
    _assert_same_training(model_dir, references[False])
