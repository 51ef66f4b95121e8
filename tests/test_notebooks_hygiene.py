"""The committed notebooks: one clean run each, small, Colab-ready, smoke-switchable, checked by nbval, and glue only.

nbval (`pytest notebooks --nbval-lax`) re-runs the notebooks and compares the cells tagged nbval-check-output;
these tests check what nbval cannot: how the stored files were produced, that each .ipynb holds the cells of its
jupytext source NN_name.py, and what they contain.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "notebooks"))
import run_notebooks  # noqa: E402  (notebooks/ is not a package)

NAMES = ["01_data", "02_architecture", "03_flow_matching", "04_training", "05_generation", "06_play"]
MAX_BYTES = 3_000_000  # all notebooks together
RERUN = "python notebooks/run_notebooks.py {prefix}  (or `make notebooks`)"
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


def test_the_notebooks_are_there_with_their_sources():
    found = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert set(NAMES) <= set(found), f"missing notebooks: {sorted(set(NAMES) - set(found))}"
    sources = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert sources == found, "every NN_name.ipynb needs its jupytext source NN_name.py, and the other way round"


@pytest.mark.parametrize("name", NAMES)
def test_stored_outputs_come_from_one_clean_run(name):
    """Execution counts 1..N in order: the outputs were made top to bottom in one fresh kernel, and no error."""
    cells = code_cells(load(name))
    counts = [c["execution_count"] for c in cells]
    assert counts == list(range(1, len(cells) + 1)), f"{name}: execution counts {counts}; re-execute it top to " \
        f"bottom: {RERUN.format(prefix=name[:2])}"
    errors = [o.get("ename") for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{name}: stored outputs hold errors {errors}"


@pytest.mark.parametrize("name", NAMES)
def test_kernelspec(name):
    assert load(name)["metadata"]["kernelspec"]["name"] == "python3"


def test_notebooks_are_small():
    sizes = {p.name: p.stat().st_size for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert sum(sizes.values()) < MAX_BYTES, f"the notebooks weigh {sum(sizes.values()) / 1e6:.2f} MB together " \
        f"({ {k: round(v / 1e6, 2) for k, v in sizes.items()} }); keep GIFs small (< 3 MB in all)"


@pytest.mark.parametrize("name", NAMES)
def test_colab_badge_and_setup_come_from_pyproject(name):
    """The repository URL lives in pyproject.toml only; run_notebooks.py writes the badge and the install."""
    assert not run_notebooks.sync_source(name, check=True), \
        f"{name}.py: badge or setup cell out of date; run python notebooks/run_notebooks.py --no-execute {name[:2]}"
    cells = load(name)["cells"]
    url = run_notebooks.colab_url(name)
    assert cells[0]["cell_type"] == "markdown" and url in text(cells[0]) and "GPU" in text(cells[0]), \
        f"{name}: the first cell must carry the Colab badge linking to {url} and say to pick a GPU runtime"
    setup = text(code_cells(load(name))[0])
    assert '"google.colab" in sys.modules' in setup and f"git+{run_notebooks.repository()}" in setup \
        and "%matplotlib inline" in setup, \
        f"{name}: the first code cell must pip-install the repo on Colab only and set %matplotlib inline"


def test_repository_url_lives_in_pyproject_only():
    url = run_notebooks.repository().removeprefix("https://")
    tracked = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".toml", ".yml", ".cfg")
               and not any(part.startswith(".") or part in ("outputs", "data_video") for part in p.parts)]
    holders = [str(p.relative_to(ROOT)) for p in tracked if url in p.read_text(encoding="utf-8", errors="ignore")]
    generated = {f"notebooks/{n}.py" for n in NAMES}  # written by run_notebooks.py from pyproject.toml
    assert set(holders) - generated == {"pyproject.toml"}, f"{url} is written by hand in {holders}"


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
def test_notebook_matches_its_source(name):
    """NN_name.py is the source: the stored outputs must come from the cells (and tags) it holds now."""
    source = jupytext.read(ROOT / "notebooks" / f"{name}.py", fmt="py:percent")
    want = [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in source.cells]
    stored = [(c["cell_type"], text(c), c["metadata"].get("tags", [])) for c in load(name)["cells"]]
    assert stored == want, f"{name}.ipynb differs from {name}.py: re-run {RERUN.format(prefix=name[:2])}"


@pytest.mark.parametrize("name", NAMES)
def test_exercises_with_hidden_solutions_and_references(name):
    """2-4 exercises at the end, each solved in a collapsed cell that runs with the notebook; a references list."""
    cells = load(name)["cells"]
    headings = [text(c) for c in cells if c["cell_type"] == "markdown"]
    assert any("## Exercises" in h for h in headings), f"{name}: no '## Exercises' section"
    assert any("## References" in h for h in headings) and "arxiv.org" in "".join(headings).lower(), \
        f"{name}: no '## References' section citing the papers"
    solutions = [c for c in cells if "solution" in c["metadata"].get("tags", [])]
    assert 2 <= len(solutions) <= 4, f"{name}: {len(solutions)} solution cells; expected 2-4 exercises"
    for cell in solutions:
        assert cell["cell_type"] == "code" and cell["metadata"].get("jupyter", {}).get("source_hidden"), \
            f"{name}: a solution must be a code cell with its source collapsed (jupyter.source_hidden)"
