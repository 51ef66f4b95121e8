"""Summarise the last `mutmut run` (mutants/) per module, with the equivalent mutants and their reasons.

    make mutation                              # = python docs/mutation_report.py --run
    python docs/mutation_report.py --run       # a fresh `mutmut run` over SCOPE (2 processes), then the table
    python docs/mutation_report.py             # the table only, from the results already in mutants/
    python docs/mutation_report.py --survivors # also print the diff of every survivor not listed as equivalent

A mutant is "killed" when a test failed (or it ran past mutmut's time limit, a loop that never ends).
"equivalent" mutants survived because they change nothing a test can observe; each is listed in
EQUIVALENT below with one line of reason. Every other survivor is a gap in the tests.
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
EQUIVALENT_FILE = Path(__file__).with_name("mutation_equivalent.txt")
# which functions are mutated, per core module (mutmut's names: x_<function>, xǁ<Class>ǁ<method>). The training
# loop `train`, the CLI and the epoch evaluation are out: their tests train real runs, minutes per mutant.
SCOPE = {
    "mariofm/config.py": ["*"],
    "mariofm/flow.py": ["*"],
    "mariofm/unet.py": ["*"],
    "mariofm/sample.py": ["*"],
    "mariofm/schedule.py": ["*"],
    "mariofm/state.py": ["*"],
    "mariofm/checkpoint.py": ["*"],
    "mariofm/train.py": ["x_train_step__*", "x_out_of_memory__*"],
    "mariofm/runlog.py": ["x_read_metrics__*", "xǁMetricsLogǁ*"],
}
KILLED_CODES = {1, 3}  # a test failed / pytest's internal error
TIMEOUT_CODES = {36, -24, 24, 152, 255}  # CPU time limit: the mutant looped or slowed the tests 30-fold


def load_equivalent() -> dict[str, str]:
    """{mutant name: reason} from docs/mutation_equivalent.txt, one `name: reason` per line (# comments)."""
    out = {}
    for line in EQUIVALENT_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def patterns() -> list[str]:
    """SCOPE as mutmut name patterns: mariofm/train.py + x_train_step__* -> mariofm.train.x_train_step__*."""
    return [f"{module.removesuffix('.py').replace('/', '.')}.{p}" for module, ps in SCOPE.items() for p in ps]


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """{module path: {mutant name: exit code}} for the mutants of SCOPE that mutmut left in `mutants`."""
    out = {}
    for module in SCOPE:
        meta = mutants / f"{module}.meta"
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            out[module] = {k: v for k, v in codes.items() if any(fnmatch(k, p) for p in patterns())}
    return out


def table(by_module: dict, equivalent: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """The markdown table, the survivors not listed as equivalent, and listed names that did not survive."""
    lines = ["| module | mutants | killed | equivalent | survived | not run | killed or equivalent |",
             "|---|---|---|---|---|---|---|"]
    gaps, stale = [], []
    for module, codes in by_module.items():
        killed = sum(c in KILLED_CODES or c in TIMEOUT_CODES for c in codes.values())
        survivors = [name for name, c in codes.items() if c == 0]
        equiv = [name for name in survivors if name in equivalent]
        not_run = sum(c is None or c in (33, 5, 34) for c in codes.values())
        stale += [name for name, c in codes.items() if name in equivalent and c != 0]
        gaps += [name for name in survivors if name not in equivalent]
        total = len(codes)
        score = (killed + len(equiv)) / total if total else 0.0
        lines.append(f"| `{module}` | {total} | {killed} | {len(equiv)} | {len(survivors) - len(equiv)} | "
                     f"{not_run} | {score:.1%} |")
    return "\n".join(lines), gaps, stale


def run_mutmut(mutants: Path, processes: int) -> None:
    """A fresh run (old results would not see changed tests), one thread per process, log in mutants/run.log."""
    shutil.rmtree(mutants, ignore_errors=True)
    mutants.mkdir()
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(mutants / "run.log", "w") as log:
        done = subprocess.run([str(mutmut), "run", "--max-children", str(processes), *patterns()], cwd=ROOT,
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        sys.exit(f"mutmut failed (exit {done.returncode}); see {mutants / 'run.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--survivors", action="store_true", help="print each unexplained survivor's diff")
    parser.add_argument("--run", action="store_true", help="delete mutants/ and run mutmut over SCOPE first")
    parser.add_argument("--processes", type=int, default=2, help="mutmut's --max-children with --run")
    args = parser.parse_args()
    if args.run:
        run_mutmut(args.mutants, args.processes)
    by_module = results(args.mutants)
    if not by_module:
        sys.exit(f"no mutmut results under {args.mutants}: run `make mutation` first")
    text, gaps, stale = table(by_module, load_equivalent())
    print(text)
    if stale:
        print(f"\n{len(stale)} mutant(s) listed in {EQUIVALENT_FILE.name} did not survive (remove them): {stale}")
    if gaps:
        print(f"\n{len(gaps)} survivor(s) not listed as equivalent:")
        for name in gaps:
            if args.survivors:
                mutmut = Path(sys.executable).with_name("mutmut")
                diff = subprocess.run([str(mutmut), "show", name], capture_output=True, text=True, cwd=ROOT).stdout
                print("\n".join(ln for ln in diff.splitlines() if ln[:1] in "+-#" and ln[:3] not in ("+++", "---")))
            else:
                print("   ", name)


if __name__ == "__main__":
    main()
