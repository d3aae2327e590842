"""Plant mutants in a temporary copy of the tree and run their tests there; the working tree is only ever read.

A mutant names a file, a snippet of it and its mutated form. Snippets are matched line by line with indentation
ignored, so a reformatted or re-indented file still matches; if the file moved or the snippet left it, every Python
file of the tree is searched and the mutant is applied where the snippet is found once (reported as moved). A
snippet found nowhere, or more than once, is reported as such and nothing is run for it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

KILLED, SURVIVED, NOT_FOUND, AMBIGUOUS, NO_TESTS, TIMEOUT = (
    "killed",
    "SURVIVED",
    "snippet not found",
    "snippet ambiguous",
    "tests not runnable",
    "killed (timeout)",
)


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `original` in `file` becomes `mutated`; `tests` are pytest arguments that must then fail."""

    name: str
    area: str
    kind: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    harmless: str | None = None  # why a survivor would not hurt a user (documented in docs/testing.md)


@dataclass
class Outcome:
    name: str
    area: str
    kind: str
    status: str
    seconds: float
    where: str = ""
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def _lines(text: str) -> list[str]:
    return textwrap.dedent(text).strip("\n").splitlines()


def find_snippet(source: str, snippet: str) -> list[int]:
    """Start line numbers where the snippet's lines occur in `source`, each compared with its indentation stripped."""
    wanted = [line.strip() for line in _lines(snippet)]
    lines = [line.strip() for line in source.splitlines()]
    return [start for start in range(len(lines) - len(wanted) + 1) if lines[start : start + len(wanted)] == wanted]


def apply_mutation(source: str, start: int, original: str, mutated: str) -> str:
    """`source` with the original lines at `start` replaced by `mutated`, re-indented to the first matched line."""
    lines = source.splitlines(keepends=True)
    count = len(_lines(original))
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    replacement = [indent + line + "\n" if line.strip() else "\n" for line in _lines(mutated)]
    return "".join(lines[:start] + replacement + lines[start + count :])


def locate(tree: Path, mutant: Mutant) -> tuple[Path | None, int | None, str]:
    """(file, start line, note): the named file first, else the one Python file of the tree holding the snippet."""
    named = tree / mutant.file
    if named.is_file():
        starts = find_snippet(named.read_text(encoding="utf-8"), mutant.original)
        if len(starts) == 1:
            return named, starts[0], ""
        if len(starts) > 1:
            return None, None, f"{AMBIGUOUS}: {len(starts)} matches in {mutant.file}"
    found = []
    for path in sorted(tree.rglob("*.py")):
        if path.relative_to(tree).parts[0] == "tests":
            continue
        starts = find_snippet(path.read_text(encoding="utf-8", errors="replace"), mutant.original)
        found += [(path, start) for start in starts]
    if len(found) == 1:
        path, start = found[0]
        return path, start, f"moved: {mutant.file} -> {path.relative_to(tree)}"
    if found:
        return None, None, f"{AMBIGUOUS}: {len(found)} matches in the tree"
    missing = "" if named.is_file() else f" ({mutant.file} does not exist)"
    return None, None, f"{NOT_FOUND} in {mutant.file} or anywhere else{missing}"


def copy_tree(source: Path, target: Path) -> None:
    """The files git tracks or would track (ignored build outputs, venvs and data left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        relative = os.fsdecode(name)
        origin = source / relative
        if origin.is_file():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """pytest in `tree`, importing the copy's code only; (exit code or None on timeout, output tail)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, ""
    return done.returncode, (done.stdout + done.stderr)[-1500:]


def missing_tests(tree: Path, tests: tuple[str, ...]) -> list[str]:
    """The test files or folders among the pytest arguments that the tree lacks (option values are skipped)."""
    paths = [test.split("::")[0] for test in tests if test.startswith("tests/")]
    return [path for path in paths if not (tree / path).exists()]


def check_mutant(tree: Path, mutant: Mutant, timeout: float) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(mutant.name, mutant.area, mutant.kind, "", 0.0, tests=list(mutant.tests))
    missing = missing_tests(tree, mutant.tests)
    path, start, note = locate(tree, mutant)
    outcome.where = note
    if path is None:
        outcome.status = AMBIGUOUS if note.startswith(AMBIGUOUS) else NOT_FOUND
    elif missing:
        outcome.status, outcome.detail = NO_TESTS, "missing: " + ", ".join(missing)
    else:
        original_text = path.read_text(encoding="utf-8")
        path.write_text(apply_mutation(original_text, start, mutant.original, mutant.mutated), encoding="utf-8")
        try:
            code, tail = run_tests(tree, mutant.tests, timeout)
        finally:
            path.write_text(original_text, encoding="utf-8")
        if code is None:
            outcome.status = TIMEOUT
        elif code == 0:
            outcome.status = SURVIVED
        elif code == 1:
            outcome.status = KILLED
        else:
            outcome.status, outcome.detail = NO_TESTS, f"pytest exit code {code}: {tail[-400:]}"
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


def check_baseline(tree: Path, mutants: list[Mutant], timeout: float, log) -> dict[tuple[str, ...], str]:
    """Each distinct test selection on the unmutated copy: a selection that already fails would 'kill' anything."""
    failures = {}
    for tests in dict.fromkeys(mutant.tests for mutant in mutants):
        if missing_tests(tree, tests):
            continue
        code, tail = run_tests(tree, tests, timeout)
        if code != 0:
            failures[tests] = f"exit code {code}: {tail[-400:]}"
        log(f"baseline {' '.join(tests)}: {'ok' if code == 0 else failures[tests]}")
    return failures


def run(mutants: list[Mutant], timeout: float, baseline: bool, log=print, source: Path = REPO_ROOT) -> list[Outcome]:
    """Check every mutant in one temporary copy of `source` (restored between mutants, deleted at the end)."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="ivt-mutation-") as workspace:
        tree = Path(workspace) / "tree"
        copy_tree(source, tree)
        broken = check_baseline(tree, mutants, timeout, log) if baseline else {}
        for mutant in mutants:
            if mutant.tests in broken:
                outcome = Outcome(mutant.name, mutant.area, mutant.kind, NO_TESTS, 0.0, detail="fails unmutated")
            else:
                outcome = check_mutant(tree, mutant, timeout)
            log(f"{outcome.status:>18}  {outcome.name}  ({outcome.seconds:.0f} s) {outcome.where} {outcome.detail}")
            outcomes.append(outcome)
    return outcomes


def report_markdown(outcomes: list[Outcome], mutants: list[Mutant]) -> str:
    harmless = {mutant.name: mutant.harmless for mutant in mutants}
    lines = ["| mutant | area | kind | result | s |", "|---|---|---|---|---:|"]
    for outcome in outcomes:
        status = outcome.status
        if status == SURVIVED and harmless.get(outcome.name):
            status += f" (harmless: {harmless[outcome.name]})"
        lines.append(f"| {outcome.name} | {outcome.area} | {outcome.kind} | {status} | {outcome.seconds:.0f} |")
    counts = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines += ["", ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))]
    return "\n".join(lines)


def write_report(path: Path, outcomes: list[Outcome], mutants: list[Mutant]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps([asdict(outcome) for outcome in outcomes], indent=2), encoding="utf-8")
    else:
        path.write_text(report_markdown(outcomes, mutants) + "\n", encoding="utf-8")
