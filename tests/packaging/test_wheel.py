"""The built wheel holds the library and nothing else: the project's own import names, all of their files, and
console scripts that run code it installs. How the installed wheel runs outside a checkout is checked by
tests/packaging/check_installed.py, which .ci/run runs in a fresh virtual environment."""

import zipfile

import pytest

from tests.packaging.wheel_contents import (
    build_wheel,
    console_scripts,
    is_project_name,
    top_level_names,
    wheel_files,
    wheel_problems,
)

CHECKOUT_ONLY = ("training", "dataset_scripts", "local_hub", "demo", "bench", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_installs_only_the_project_s_names_with_all_their_files(wheel):
    assert wheel_problems(wheel) == []
    assert top_level_names(wheel) == {"modeling_ivt", "ivt_search"}
    files = wheel_files(wheel)
    assert not [path for path in files if path.split("/")[0] in CHECKOUT_ONLY]
    assert {"modeling_ivt/modeling_ivt.py", "modeling_ivt/embedding.py", "ivt_search/__main__.py"} <= set(files)


def test_console_scripts_run_installed_code(wheel):
    assert console_scripts(wheel) == {
        "ivt-search": "ivt_search.__main__:main",
        "ivt-export-onnx": "modeling_ivt.export_onnx:main",
        "ivt-convert-checkpoint": "modeling_ivt.convert_original_checkpoint:main",
        "ivt-convert-irra-checkpoint": "modeling_ivt.convert_irra_checkpoint:main",
        "ivt-convert-vit-bert": "modeling_ivt.convert_vit_bert:main",
        "ivt-convert-pretraining": "modeling_ivt.convert_pretraining:main",
    }


def test_the_checks_catch_a_generic_name_and_a_missing_data_file(wheel, tmp_path):
    """A wheel that also ships `training/` and lacks one file of `modeling_ivt` is refused, naming both."""
    broken = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("/RECORD"):
                rows = [row for row in data.decode().splitlines() if not row.startswith("modeling_ivt/cli.py,")]
                data = "\n".join([*rows, "training/run.py,,"]).encode()
            if item.filename != "modeling_ivt/cli.py":
                target.writestr(item, data)
    problems = wheel_problems(broken)
    assert any(problem.startswith("training: ") for problem in problems), problems
    assert any(problem.startswith("modeling_ivt/cli.py: ") for problem in problems), problems
    assert not is_project_name("dataset_scripts") and is_project_name("ivt_search")
