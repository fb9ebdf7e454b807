"""The Colab notebooks run top to bottom, offline, in their small-size mode.

Each notebook is executed with nbclient in a fresh kernel of this Python
(`sys.executable`, so the venv's packages), with `KD_NOTEBOOK_SMALL=1`, in a
temporary working directory, and with the embedded dataset cached in a
temporary `KERAS_HOME`: nothing is written into the repository.
"""

import json
import os
import pathlib
import sys
import time

import nbclient
import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_wsol_evaluation.ipynb", "03_why_sigmoid.ipynb"]
CELL_TIMEOUT_S = 600
# Notebooks that save their main figure to $KD_NOTEBOOK_FIGURE (for the README).
SAVES_FIGURE = {"01_quickstart.ipynb", "03_why_sigmoid.ipynb"}
COLAB_URL = (
    "https://colab.research.google.com/github/keras-dualsig/keras-dualsig/blob/main/"
    "notebooks/{}"
)


def test_the_three_notebooks_exist():
    assert NOTEBOOKS == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_clean(name):
    """Outputs cleared, valid nbformat, a Colab badge, a parameters cell."""
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [], f"{name}: a code cell has outputs"
        assert cell.execution_count is None, f"{name}: execution_count is set"
    assert COLAB_URL.format(name) in notebook.cells[0].source
    assert notebook.metadata.kernelspec.name == "python3"
    assert 'if "google.colab" in sys.modules' in code[0].source
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """Environment (and kernelspec) for the notebook kernels.

    A "python3" kernelspec written to a temporary JUPYTER_PATH (searched
    first) runs this interpreter, so the kernel sees the same packages as
    the test, whatever kernelspecs the machine has installed.
    """
    root = tmp_path_factory.mktemp("notebooks")
    spec_dir = root / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (keras_dualsig tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    (root / "keras_home").mkdir()
    return {
        "KD_NOTEBOOK_SMALL": "1",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # The embedded dataset (and Keras' config) go here, not to ~/.keras.
        "KERAS_HOME": str(root / "keras_home"),
        "JUPYTER_PATH": str(root / "jupyter"),
        # This checkout's package first, whatever copy the venv has installed.
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_small_mode(name, kernel_env, tmp_path, monkeypatch):
    for key, value in kernel_env.items():
        monkeypatch.setenv(key, value)
    # The kernel inherits this environment; a non-inline backend set for the
    # tests would hide the figures.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    figure_path = tmp_path / "figure.png"
    monkeypatch.setenv("KD_NOTEBOOK_FIGURE", str(figure_path))
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    # One extra cell (in memory only) reports the kernel's interpreter.
    notebook.cells.append(
        nbformat.v4.new_code_cell("import sys; print(sys.executable)")
    )
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's cwd
    )
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, with the traceback, on error
    finally:
        # The executed notebook, for a look at its outputs after a failure.
        nbformat.write(notebook, tmp_path / name)
    print(f"{name}: {time.perf_counter() - start:.0f} s")

    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{name} rendered no figure"
    assert figure_path.exists() == (name in SAVES_FIGURE)
    executable = notebook.cells[-1].outputs[0]["text"].strip()
    assert executable == sys.executable
