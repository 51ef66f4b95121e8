"""Mutation testing of mariofm's core with mutmut 3.x: run it, and summarise the result per module.

    make mutation                               # = python docs/mutation_report.py --run
    python docs/mutation_report.py --run        # a fresh run of every group in GROUPS (2 processes), then the table
    python docs/mutation_report.py --run --group training   # one group only
    python docs/mutation_report.py              # the table only, from the results already in mutants/
    python docs/mutation_report.py --survivors  # also print the diff of each survivor not listed as equivalent

Each group mutates some functions (`scope`) and may run only its own fast test files (`tests`): mutmut runs, for
each mutant, the tests of that list that call the mutated function, so a mutant takes seconds. A group runs in
mutants/<group>/ (links to mariofm/ and tests/, and a pyproject.toml with the group's [tool.mutmut] settings);
mutmut writes its copy and results under mutants/<group>/mutants/.

A mutant is "killed" when a test failed (or it ran past mutmut's time limit: a loop that never ends).
"equivalent" mutants survived because they change nothing a test can observe; each is listed with one line of
reason in docs/mutation_equivalent.txt. Every other survivor is a gap in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "mutants"
EQUIVALENT_FILE = Path(__file__).with_name("mutation_equivalent.txt")
# mutmut's names: x_<function>, xǁ<Class>ǁ<method>. The training loop `train`, the CLI and the epoch evaluation
# are out of scope: their tests train real runs, minutes per mutant (test_train, test_commands cover them).
GROUPS = {
    "model": dict(
        scope={"mariofm/config.py": ["*"], "mariofm/flow.py": ["*"], "mariofm/convs.py": ["*"],
               "mariofm/embedding.py": ["*"], "mariofm/attention.py": ["*"], "mariofm/unet.py": ["*"],
               "mariofm/sample.py": ["*"]},
        tests=["tests/test_config.py", "tests/test_flow.py", "tests/test_flow_exact.py", "tests/test_sample.py",
               "tests/test_sample_exact.py", "tests/test_unet.py", "tests/test_unet_exact.py",
               "tests/test_grid_free.py"]),
    "training": dict(
        scope={"mariofm/schedule.py": ["*"], "mariofm/state.py": ["*"], "mariofm/checkpoint.py": ["*"],
               "mariofm/train.py": ["x_train_step__*"], "mariofm/stopping.py": ["x_out_of_memory__*"],
               "mariofm/runlog.py": ["x_read_metrics__*", "xǁMetricsLogǁ*"],
               "mariofm/own_frames.py": ["*"], "mariofm/moving.py": ["*"]},
        tests=["tests/test_training_step.py", "tests/test_checkpoint.py", "tests/test_own_frames.py",
               "tests/test_moving.py"]),
}
KILLED_CODES = {1, 3}  # a test failed / pytest's internal error
TIMEOUT_CODES = {36, -24, 24, 152, 255}  # CPU time limit: the mutant looped or slowed the tests 30-fold
NOT_RUN_CODES = {None, 5, 33, 34}  # not checked / no test calls the function / skipped


def load_equivalent() -> dict[str, str]:
    """{mutant name: reason} from docs/mutation_equivalent.txt, one `name: reason` per line (# comments)."""
    out = {}
    for line in EQUIVALENT_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def patterns(scope: dict[str, list[str]]) -> list[str]:
    """A scope as mutmut name patterns: mariofm/train.py + x_train_step__* -> mariofm.train.x_train_step__*."""
    return [f"{module.removesuffix('.py').replace('/', '.')}.{p}" for module, ps in scope.items() for p in ps]


def settings(group: dict) -> str:
    """The [tool.mutmut] section of a group, as TOML."""
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"
    return "\n".join(["[tool.mutmut]", 'source_paths = ["mariofm/"]',
                      f"only_mutate = {toml_list(list(group['scope']))}",
                      'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
                      f"pytest_add_cli_args_test_selection = {toml_list(group['tests'])}", ""])


def run_group(name: str, processes: int) -> None:
    """A fresh run (old results would not see changed tests), one thread per process, log in run.log."""
    stage = WORK / name
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for folder in ("mariofm", "tests"):
        (stage / folder).symlink_to(ROOT / folder, target_is_directory=True)
    (stage / "pyproject.toml").write_text(settings(GROUPS[name]))
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print(f"mutmut: group {name} ...", flush=True)
    with open(stage / "run.log", "w") as log:
        done = subprocess.run([str(mutmut), "run", "--max-children", str(processes),
                               *patterns(GROUPS[name]["scope"])], cwd=stage, stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    if done.returncode:
        sys.exit(f"mutmut failed (exit {done.returncode}); see {stage / 'run.log'}")


def results() -> dict[str, dict[str, int | None]]:
    """{module path: {mutant name: exit code}} for the mutants in scope that the last runs left in WORK."""
    out = {}
    for name, group in GROUPS.items():
        for module in group["scope"]:
            meta = WORK / name / "mutants" / f"{module}.meta"
            if meta.exists():
                codes = json.loads(meta.read_text())["exit_code_by_key"]
                out[module] = {k: v for k, v in codes.items() if any(fnmatch(k, p) for p in patterns(group["scope"]))}
    return out


def table(by_module: dict, equivalent: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """The markdown table, the survivors not listed as equivalent, and listed names that did not survive."""
    lines = ["| module | mutants | killed | equivalent | survived | not run | killed or equivalent |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    gaps, stale = [], []
    for module, codes in by_module.items():
        killed = sum(c in KILLED_CODES or c in TIMEOUT_CODES for c in codes.values())
        survivors = [name for name, c in codes.items() if c == 0]
        equiv = [name for name in survivors if name in equivalent]
        not_run = sum(c in NOT_RUN_CODES for c in codes.values())
        stale += [name for name, c in codes.items() if name in equivalent and c != 0]
        gaps += [name for name in survivors if name not in equivalent]
        total = len(codes)
        score = (killed + len(equiv)) / total if total else 0.0
        lines.append(f"| `{module}` | {total} | {killed} | {len(equiv)} | {len(survivors) - len(equiv)} | "
                     f"{not_run} | {score:.1%} |")
    return "\n".join(lines), gaps, stale


def show(name: str) -> str:
    """The diff of one mutant, from the group folder that holds it."""
    module = name.split(".x")[0].replace(".", "/") + ".py"
    group = next(g for g, spec in GROUPS.items() if module in spec["scope"])
    mutmut = Path(sys.executable).with_name("mutmut")
    diff = subprocess.run([str(mutmut), "show", name], capture_output=True, text=True, cwd=WORK / group).stdout
    return "\n".join(ln for ln in diff.splitlines() if ln[:1] in "+-#" and ln[:3] not in ("+++", "---"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run mutmut afresh first")
    parser.add_argument("--group", choices=list(GROUPS), action="append", help="with --run: only these groups")
    parser.add_argument("--processes", type=int, default=2, help="mutmut's --max-children")
    parser.add_argument("--survivors", action="store_true", help="print each unexplained survivor's diff")
    args = parser.parse_args()
    if args.run:
        for name in args.group or GROUPS:
            run_group(name, args.processes)
    by_module = results()
    if not by_module:
        sys.exit(f"no mutmut results under {WORK}: run `make mutation` first")
    text, gaps, stale = table(by_module, load_equivalent())
    print(text)
    if stale:
        print(f"\n{len(stale)} mutant(s) listed in {EQUIVALENT_FILE.name} did not survive (remove them): {stale}")
    if gaps:
        print(f"\n{len(gaps)} survivor(s) not listed as equivalent:")
        for name in gaps:
            print(show(name) if args.survivors else f"    {name}")


if __name__ == "__main__":
    main()
