"""The mutation check's own machinery on a two-file project: a planted bug is detected in a copy, a harmless one
survives, a snippet that left its file is followed, a missing one is reported, and the source tree is never touched."""

import subprocess
import textwrap

from tests.mutation.runner import KILLED, NOT_FOUND, SURVIVED, Mutant, apply_mutation, find_snippet, run

LIBRARY = textwrap.dedent(
    """
    def clamp(value, low, high):
        if value < low:
            return low
        return min(value, high)
    """
)
TESTS = textwrap.dedent(
    """
    from lib.numbers import clamp

    def test_clamp():
        assert clamp(-1, 0, 5) == 0 and clamp(9, 0, 5) == 5 and clamp(3, 0, 5) == 3
    """
)


def _project(root):
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "numbers.py").write_text(LIBRARY)
    (root / "tests").mkdir()
    (root / "tests" / "test_numbers.py").write_text(TESTS)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def test_snippets_match_whatever_the_indentation_and_keep_it():
    source = "def f(x):\n    if x:\n        return 1\n    return 2\n"
    assert find_snippet(source, "if x:\n    return 1") == [1]
    assert find_snippet(source, "if not x:") == []
    assert apply_mutation(source, 1, "if x:\n    return 1", "if not x:\n    return 1") == (
        "def f(x):\n    if not x:\n        return 1\n    return 2\n"
    )


def test_a_planted_bug_is_killed_in_a_copy_and_the_source_stays_as_it_was(tmp_path):
    root = _project(tmp_path / "project")
    tests = ("tests/test_numbers.py",)
    mutants = [
        Mutant("low-bound-dropped", "demo", "check removed", "lib/numbers.py", "if value < low:", "if False:", tests),
        Mutant("same-result", "demo", "harmless", "lib/numbers.py", "return low", "return max(low, value)", tests),
        Mutant("moved", "demo", "off-by-one", "lib/old_name.py", "return min(value, high)", "return high", tests),
        Mutant("gone", "demo", "off-by-one", "lib/numbers.py", "return value", "return 0", tests),
    ]
    outcomes = {outcome.name: outcome for outcome in run(mutants, timeout=120, baseline=True, log=lambda line: None,
                                                          source=root)}  # fmt: skip
    assert outcomes["low-bound-dropped"].status == KILLED
    assert outcomes["same-result"].status == SURVIVED
    assert outcomes["moved"].status == KILLED and "moved: lib/old_name.py -> lib/numbers.py" in outcomes["moved"].where
    assert outcomes["gone"].status == NOT_FOUND
    assert (root / "lib" / "numbers.py").read_text() == LIBRARY
