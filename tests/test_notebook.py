"""notebooks/colab_tpu.ipynb end to end on the CPU, in its TINY setting (about 1-3 minutes).

The cell tagged "parameters" keeps its Colab defaults; a cell inserted right after it (as
papermill does) sets TINY = True and the output folder, and the notebook derives the rest.
"""

import json
import pathlib

import nbclient
import nbformat

from googlenet_jax import diagnose, reporting, sweep

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / "notebooks" / "colab_tpu.ipynb"
CELL_TIMEOUT_S = 600


def read_notebook():
  return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(nb) -> int:
  tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
  assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
  return tagged[0]


def test_committed_notebook_is_valid_with_cleared_outputs():
  nb = read_notebook()
  nbformat.validate(nb)
  assert nb.nbformat == 4
  parameters = nb.cells[parameters_index(nb)]
  assert parameters.cell_type == "code" and "TINY = False" in parameters.source
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"cell {cell.get('id')} has outputs"


def test_notebook_runs_tiny_on_cpu(tmp_path, monkeypatch):
  nb = read_notebook()
  out = tmp_path / "out"
  override = nbformat.v4.new_code_cell(f"TINY = True\nOUT_DIR = {str(out)!r}",
                                       metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(parameters_index(nb) + 1, override)

  # The kernel, and the commands it starts, inherit this environment (the CPU only,
  # and conftest's compilation settings).
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # Raises CellExecutionError, with the cell's traceback, on a failure.

  expected = [out / "diagnose" / diagnose.REPORT_FILE, out / "diagnose" / diagnose.PLOT_FILE,
              out / "sweep" / sweep.TABLE_MD, out / "sweep" / sweep.TABLE_CSV,
              out / "sweep" / sweep.LOSS_PLOT, out / "sweep" / sweep.ACCURACY_PLOT,
              out / "train_glorot" / reporting.CURVES_FILE,
              out / "train_glorot" / reporting.METRICS_FILE,
              out / "train_glorot" / "summary.json"]
  missing = [str(p.relative_to(out)) for p in expected if not p.is_file() or not p.stat().st_size]
  assert not missing, f"the notebook did not write {missing}"

  schemes = [s["scheme"] for s in json.loads(expected[0].read_text())["schemes"]]
  assert schemes == ["glorot_uniform", "torch_default"]
  table = expected[2].read_text()
  assert "| torch_default |" in table and "| glorot_uniform |" in table
  assert json.loads(expected[-1].read_text())["step"] == 4

  shown = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
           if o.output_type == "display_data"]
  assert sum("image/png" in o.data for o in shown) == 4  # signal, sweep loss + accuracy, curves
  assert any("text/markdown" in o.data and "torch_default" in o.data["text/markdown"] for o in shown)
