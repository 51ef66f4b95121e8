"""The committed notebooks: one clean run each, small, Colab-ready, smoke-switchable, checked by nbval, and glue only.

nbval (`pytest notebooks --nbval-lax`) re-runs the notebooks and compares the cells tagged nbval-check-output;
these tests check what nbval cannot: how the stored files were produced and what they contain.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["01_data", "02_architecture", "03_flow_matching", "04_training", "05_generation"]
COLAB = "https://colab.research.google.com/github/mariofm/mariofm/blob/main/notebooks/{name}.ipynb"
MAX_BYTES = 3_000_000
CHECK_TAG = "nbval-check-output"


def load(name: str) -> dict:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def text(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def python_source(cell: dict) -> str:
    """A code cell as plain Python: IPython magics (%...) and shell escapes (!...) become blank lines."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text(cell).splitlines())


def library_names() -> set[str]:
    """Every function and class defined at the top level of a mariofm module (read with ast: no import)."""
    names = set()
    for module in (ROOT / "mariofm").glob("*.py"):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        names |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return names


def test_the_five_notebooks_are_there():
    found = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert found == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_outputs_come_from_one_clean_run(name):
    """Execution counts 1..N in order: the outputs were made top to bottom in one fresh kernel, and no error."""
    cells = code_cells(load(name))
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: execution counts {counts}; re-execute it top to " \
        "bottom: python notebooks/build_notebooks.py <NN> --execute"
    errors = [o.get("ename") for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{name}: stored outputs hold errors {errors}"


@pytest.mark.parametrize("name", NAMES)
def test_kernelspec_and_size(name):
    nb = load(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    size = (ROOT / "notebooks" / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name} is {size / 1e6:.1f} MB; keep GIFs and figures small (< 3 MB per notebook)"


@pytest.mark.parametrize("name", NAMES)
def test_colab_badge_and_setup(name):
    cells = load(name)["cells"]
    assert cells[0]["cell_type"] == "markdown" and COLAB.format(name=name) in text(cells[0]), \
        f"{name}: the first cell must carry the Colab badge linking to {COLAB.format(name=name)}"
    setup = text(code_cells(load(name))[0])
    assert '"google.colab" in sys.modules' in setup and "pip" in setup and "%matplotlib inline" in setup, \
        f"{name}: the first code cell must pip-install the repo on Colab only and set %matplotlib inline"


@pytest.mark.parametrize("name", NAMES)
def test_smoke_parameters_cell(name):
    params = [c for c in code_cells(load(name)) if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1, f"{name}: expected one code cell tagged 'parameters'"
    assert 'os.environ.get("MARIOFM_SMOKE") == "1"' in text(params[0])


@pytest.mark.parametrize("name", NAMES)
def test_some_cells_are_checked_by_nbval(name):
    checked = [c for c in code_cells(load(name)) if CHECK_TAG in c["metadata"].get("tags", [])]
    assert checked, f"{name}: tag at least one preset-independent cell {CHECK_TAG!r}"
    for cell in checked:  # a checked cell without output checks nothing
        assert cell["outputs"], f"{name}: checked cell {text(cell)[:60]!r} has no stored output"
    for cell in code_cells(load(name)):  # comment markers are easy to get wrong (see the nbval field notes)
        assert "NBVAL_" not in text(cell), f"{name}: use cell tags, not NBVAL_ comments"


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_call_the_library_never_redefine_it(name):
    library = library_names()
    assert {"fm_loss", "VideoUNet", "sample", "train"} <= library  # the scan itself works
    for cell in code_cells(load(name)):
        tree = ast.parse(python_source(cell))
        defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef))}
        assert not defined & library, f"{name} re-defines {sorted(defined & library)} from mariofm; import it"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_matches_its_builder(name):
    """notebooks/build_notebooks.py is the source: a cell edited in the .ipynb alone would be lost on rebuild."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "notebooks" / "build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    built = [cell.source for cell in builder.NOTEBOOKS[name]()]
    stored = [text(cell) for cell in load(name)["cells"]]
    assert stored == built, f"{name}.ipynb differs from build_notebooks.py: edit the builder, then run " \
        f"python notebooks/build_notebooks.py {name[:2]} --execute"
