"""A killed training run, re-run with the same command, ends where an
uninterrupted run ends (issue 6, item 2)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_dualsig as kd

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
TIMEOUT_SECONDS = 180
# A try fails only if this process sleeps through 3 epochs of the other one.
ATTEMPTS = 3


def _command(data, model_dir):
    return [
        sys.executable,
        "-m",
        "training.train_classifier",
        "--dataset=custom",
        f"--data_root={data.data_root}",
        f"--metadata_root={data.metadata_root}",
        "--num_classes=10",
        "--image_size=48",
        "--batch_size=16",
        f"--epochs={EPOCHS}",
        # Step decay, dropout and augmentation (defaults) all have to resume.
        "--decay_every=2",
        f"--model_dir={model_dir}",
    ]


def _env():
    return {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _start(command, log):
    return subprocess.Popen(
        command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=log
    )


def _kill_after_first_checkpoint(data, model_dir, log_path):
    """Starts a run and SIGKILLs it once its first checkpoint is complete.

    Returns:
        The number of epochs in the checkpoint it left, or None if the run
        ended (or was killed) outside (1, EPOCHS).
    """
    state_path = model_dir / "checkpoint" / "state.json"
    with open(log_path, "w") as log:
        victim = _start(_command(data, model_dir), log)
        # The state file is renamed into place last, so once it exists the
        # checkpoint of epoch 1 is complete and epoch 2 is running.
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not state_path.exists() and victim.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=TIMEOUT_SECONDS)
    assert state_path.exists(), log_path.read_text()[-3000:]
    killed_at = json.loads(state_path.read_text())["epoch"]
    if victim.returncode != -signal.SIGKILL or not 1 <= killed_at < EPOCHS:
        return None
    return killed_at


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights(tmp_path):
    data = kd.datasets.cluttered_mnist(
        root=tmp_path / "data", num_train=64, num_val=16, num_test=16, image_size=56
    )
    straight_dir = tmp_path / "straight"
    straight_log = open(tmp_path / "straight.log", "w")
    straight = _start(_command(data, straight_dir), straight_log)
    try:
        for attempt in range(ATTEMPTS):
            killed_dir = tmp_path / f"killed{attempt}"
            killed_at = _kill_after_first_checkpoint(
                data, killed_dir, tmp_path / f"killed{attempt}.log"
            )
            if killed_at is not None:
                break
        else:
            pytest.fail(f"no run was interrupted mid-training in {ATTEMPTS} tries")
        assert not (killed_dir / "classifier.keras").exists()

        # The same command again.
        resumed = subprocess.run(
            _command(data, killed_dir),
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"after epoch {killed_at}." in resumed.stderr
        assert f"epochs {killed_at + 1}-{EPOCHS} of {EPOCHS}" in resumed.stderr
        straight.wait(timeout=TIMEOUT_SECONDS)
    finally:
        if straight.poll() is None:
            straight.kill()
        straight_log.close()
    assert straight.returncode == 0, (tmp_path / "straight.log").read_text()[-3000:]

    # Bit-identical: same batches (seeded per epoch), same optimizer and dropout
    # state (restored), deterministic kernels (op determinism).
    expected = keras.models.load_model(straight_dir / "classifier.keras")
    actual = keras.models.load_model(killed_dir / "classifier.keras")
    for a, b in zip(expected.get_weights(), actual.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    expected_history = json.loads((straight_dir / "history.json").read_text())
    actual_history = json.loads((killed_dir / "history.json").read_text())
    for key in ("loss", "val_loss", "sparse_categorical_accuracy"):
        assert actual_history[key] == expected_history[key], key
    assert len(actual_history["loss"]) == EPOCHS
