"""training/evaluate.py at scale: shards and --merge, mirrored, multi-worker.

Two shard runs and their merge, a run on two logical CPU devices
(MirroredStrategy, in a fresh process: logical devices must be set up
before TensorFlow starts) and two worker processes on loopback
(MultiWorkerMirroredStrategy) must write exactly the files of one run over
the whole test split: results.json (intervals included) and report.md byte for
byte, outcomes.npz array for array, and the same figures.
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
from helpers.errors import raises_invalid

from training import evaluate
from training import flags as flags_lib


@pytest.fixture(scope="module")
def setup(evaluate_setup):
    return evaluate_setup  # tests/training/conftest.py


REPO = Path(__file__).resolve().parents[2]


def _values(setup, output_dir):
    info, model = setup
    return {
        "dataset": "custom",
        "data_root": info.data_root,
        "metadata_root": info.metadata_root,
        "num_classes": 10,
        "batch_size": 5,  # 12 images: batches of 5, 5 and 2.
        "model": model,
        "output_dir": str(output_dir),
        "methods": ["gradcam"],
        "num_resamples": 20,
        "num_figure_images": 7,  # More than shard 0's 5 images.
    }


def _flags(setup, output_dir, **extra):
    return flags_lib.config(evaluate.SPEC, **_values(setup, output_dir), **extra)


@pytest.fixture(scope="module")
def whole(setup, tmp_path_factory):
    """One run over the whole split: (its results, its output directory)."""
    directory = tmp_path_factory.mktemp("whole")
    return evaluate.run(_flags(setup, directory)), directory


def _assert_same_outputs(directory, reference):
    for name in ("results.json", "report.md"):
        assert (directory / name).read_bytes() == (reference / name).read_bytes()
    with (
        np.load(reference / "outcomes.npz") as a,
        np.load(directory / "outcomes.npz") as b,
    ):
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    image = keras.utils.load_img(reference / "figures" / "gradcam.png")
    again = keras.utils.load_img(directory / "figures" / "gradcam.png")
    np.testing.assert_array_equal(np.asarray(image), np.asarray(again))


def test_two_shards_merged_equal_one_run(setup, whole, tmp_path):
    whole, whole_dir = whole
    shard_dirs = [tmp_path / "shard_1", tmp_path / "shard_0"]  # Any order.
    for index, directory in zip((1, 0), shard_dirs, strict=True):
        info = evaluate.run(_flags(setup, directory, num_shards=2, shard_index=index))
        assert info["num_images"] == (5 if index == 0 else 7)
        assert not (directory / "results.json").exists()
    merged = evaluate.run(
        _flags(setup, tmp_path / "all", merge=[str(d) for d in shard_dirs])
    )
    assert json.dumps(merged) == json.dumps(whole)
    _assert_same_outputs(tmp_path / "all", whole_dir)

    with raises_invalid("merge", "each once"):
        evaluate.run(_flags(setup, tmp_path / "bad", merge=[str(shard_dirs[0])]))
    with raises_invalid("merge", "shard.json"):
        evaluate.run(_flags(setup, tmp_path / "bad", merge=[str(tmp_path)]))


def test_shard_flag_errors(setup, tmp_path):
    with raises_invalid("shard_index", "[0, --num_shards=2)"):
        evaluate.run(_flags(setup, tmp_path, num_shards=2, shard_index=2))
    with raises_invalid("num_shards", "at most the number of test batches (3"):
        evaluate.run(_flags(setup, tmp_path, num_shards=4, shard_index=0))
    with raises_invalid("num_shards", "1 with --merge"):
        evaluate.run(_flags(setup, tmp_path, num_shards=2, merge=["x"]))
    with raises_invalid("strategy", "--num_shards / --shard_index"):
        evaluate.run(_flags(setup, tmp_path, strategy="tpu"))


def _command(setup, output_dir, *extra):
    values = _values(setup, output_dir)
    values["methods"] = ",".join(values["methods"])
    return [
        sys.executable,
        "-m",
        "training.evaluate",
        *[f"--{name}={value}" for name, value in values.items()],
        *extra,
    ]


ENV = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_mirrored_on_two_cpu_devices_equals_one_run(setup, whole, tmp_path):
    _, whole_dir = whole
    command = _command(setup, tmp_path, "--strategy=mirrored", "--num_cpu_devices=2")
    done = subprocess.run(
        command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Evaluating on 2 replicas" in done.stderr
    _assert_same_outputs(tmp_path, whole_dir)


def test_batch_blocks_partition_the_batches():
    # 10 batches, 3 shards, each split again over 2 replicas (as
    # --strategy=mirrored with --num_shards does): contiguous, in order,
    # every batch exactly once.
    blocks = [
        evaluate._batch_range(10, [(shard, 3), (replica, 2)])
        for shard in range(3)
        for replica in range(2)
    ]
    assert blocks == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 8), (8, 10)]
    assert evaluate._batch_range(10, []) == (0, 10)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_equal_one_run(setup, whole, tmp_path):
    _, whole_dir = whole
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        task = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"worker{index}.log", "w")
        process = subprocess.Popen(
            _command(setup, tmp_path / "out", "--strategy=multi_worker"),
            cwd=REPO,
            env={**ENV, "TF_CONFIG": json.dumps(task)},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        workers.append((process, log))
    try:
        for process, log in workers:
            process.wait(timeout=240)
            log.close()
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
    for index, (process, log) in enumerate(workers):
        text = Path(log.name).read_text()
        assert process.returncode == 0, text[-3000:]
        assert f"Worker {index} of 2 evaluates" in text
    _assert_same_outputs(tmp_path / "out", whole_dir)
