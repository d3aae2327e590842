"""What the project's wheel must hold, checked on the built file: only the project's own import names at the top level
of site-packages (generic names such as `training` would collide with users' modules), every file git tracks in
those packages (code and package data alike), and console scripts that point into them.

    python -m tests.packaging.wheel_contents OUTPUT_DIR    # build the wheel into OUTPUT_DIR and check it (.ci/run)
"""

from __future__ import annotations

import configparser
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tests.mutation.runner import copy_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTATION = REPO_ROOT / "docs" / "installation.md"


def is_project_name(name: str) -> bool:
    """The project's import names: `modeling_ivt`, `ivt_search` and any later one that says ivt."""
    return "ivt" in name.lower()


def build_wheel(output_dir: Path) -> Path:
    """
    `pip wheel --no-deps` of a copy of the files git tracks (or would track), so that build outputs left in the
    checkout (build/, *.egg-info) can neither leak into the wheel nor be written there. The build backend is
    installed in pip's isolated build environment from the package index: a fresh venv's own setuptools is too
    old for the project's metadata.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ivt-wheel-source-") as source:
        copy_tree(REPO_ROOT, Path(source))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(output_dir), source],
            check=True,
        )
    [wheel] = output_dir.glob("ivt_hf-*.whl")
    return wheel


def _dist_info(archive: zipfile.ZipFile) -> str:
    [folder] = {name.split("/")[0] for name in archive.namelist() if name.split("/")[0].endswith(".dist-info")}
    return folder


def wheel_files(wheel: Path) -> list[str]:
    """The paths the wheel installs, as its RECORD lists them."""
    with zipfile.ZipFile(wheel) as archive:
        record = archive.read(f"{_dist_info(archive)}/RECORD").decode()
    return [row.split(",")[0] for row in record.splitlines() if row]


def top_level_names(wheel: Path) -> set[str]:
    """Every name the wheel puts at the top of site-packages: from its files and from its top_level.txt."""
    with zipfile.ZipFile(wheel) as archive:
        dist_info = _dist_info(archive)
        declared = set(archive.read(f"{dist_info}/top_level.txt").decode().split())
    installed = {
        Path(path.split("/")[0]).stem if "/" not in path else path.split("/")[0]
        for path in wheel_files(wheel)
        if not path.split("/")[0].endswith((".dist-info", ".data"))
    }
    return declared | installed


def console_scripts(wheel: Path) -> dict[str, str]:
    """Command name -> `module:function`, from the wheel's entry_points.txt."""
    with zipfile.ZipFile(wheel) as archive:
        name = f"{_dist_info(archive)}/entry_points.txt"
        text = archive.read(name).decode() if name in archive.namelist() else ""
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.optionxform = str
    entry_points.read_string(text)
    return dict(entry_points["console_scripts"]) if entry_points.has_section("console_scripts") else {}


def _tracked_files(folder: str) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", folder],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return {path for path in listed.split("\0") if path and (REPO_ROOT / path).is_file()}


def wheel_problems(wheel: Path) -> list[str]:
    """Everything wrong with the wheel, one line each; empty when it is right."""
    files = set(wheel_files(wheel))
    names = top_level_names(wheel)
    problems = [
        f"{name}: installed at the top level of site-packages, but only the project's own names (with 'ivt') may be"
        for name in sorted(names)
        if not is_project_name(name)
    ]
    for package in sorted(name for name in names if (REPO_ROOT / name).is_dir()):
        problems += [
            f"{path}: in the checkout's {package} package but not in the wheel (a data file not declared as package data?)"
            for path in sorted(_tracked_files(package) - files)
        ]
    documented = DOCUMENTATION.read_text(encoding="utf-8")
    for command, target in sorted(console_scripts(wheel).items()):
        module = target.split(":")[0].strip().replace(".", "/")
        if not {f"{module}.py", f"{module}/__init__.py"} & files:
            problems.append(f"console script {command} runs {target}, whose module is not in the wheel")
        if f"`{command}`" not in documented:
            problems.append(f"console script {command} is not described in {DOCUMENTATION.relative_to(REPO_ROOT)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m tests.packaging.wheel_contents OUTPUT_DIR\n\n{__doc__.strip()}", file=sys.stderr)
        return 2
    wheel = build_wheel(Path(argv[0]))
    problems = wheel_problems(wheel)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{wheel}: {len(wheel_files(wheel))} files, top-level names {', '.join(sorted(top_level_names(wheel)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
