"""Every command (search, demo, datasets, converters, export, evaluation, benchmarks) parses its flags the same way."""

import importlib

import pytest

from modeling_ivt.cli import CommandParser

COMMANDS = [
    "ivt_search.__main__",
    "demo.app",
    "demo.build_space",
    "demo.screenshot",
    "demo.readme_images",
    "dataset_scripts.build",
    "dataset_scripts.generate",
    "dataset_scripts.pretraining",
    "dataset_scripts.hub",
    "dataset_scripts.contact_sheet",
    "modeling_ivt.convert_original_checkpoint",
    "modeling_ivt.convert_vit_bert",
    "modeling_ivt.convert_pretraining",
    "modeling_ivt.convert_irra_checkpoint",
    "modeling_ivt.export_onnx",
    "training.evaluate",
    "bench.run",
    "bench.search_bench",
]


class _Parsed(Exception):
    pass


def _search_like_parser() -> CommandParser:
    parser = CommandParser(prog="search")
    commands = parser.add_subparsers(dest="command", required=True)
    query = commands.add_parser("query")
    query.add_argument("captions", nargs="+")
    query.add_argument("--top-k", type=int, default=10, help="hits per caption")
    query.add_argument("--batch_size", type=int, default=32)
    query.add_argument("--person-id", type=int, action="append")
    query.add_argument("--person-id-from-folder", action="store_true")
    return parser


def test_both_spellings_are_accepted_and_mean_the_same_flag():
    parser = _search_like_parser()
    dashes = parser.parse_args(["query", "a man", "--top-k", "3", "--batch-size=8", "--person-id", "4"])
    underscores = parser.parse_args(["query", "a man", "--top_k", "3", "--batch_size=8", "--person_id", "4"])
    assert vars(dashes) == vars(underscores) == {
        "command": "query",
        "captions": ["a man"],
        "top_k": 3,
        "batch_size": 8,
        "person_id": [4],
        "person_id_from_folder": False,
    }
    after_separator = parser.parse_args(["query", "--top_k", "2", "--", "--top_k"])
    assert after_separator.captions == ["--top_k"], "words after -- are captions, never rewritten"


def test_abbreviated_or_misspelt_flags_are_errors_with_a_suggestion(capsys):
    parser = _search_like_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["query", "a man", "--person-id-from-folders"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: --person-id-from-folders" in error
    assert "did you mean --person-id-from-folder?" in error
    with pytest.raises(SystemExit):
        parser.parse_args(["query", "a man", "--top", "3"])
    assert "did you mean --top-k?" in capsys.readouterr().err


def test_help_shows_the_defaults(capsys):
    parser = _search_like_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["query", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--top-k TOP_K hits per caption (default: 10)" in help_text
    assert "--batch_size BATCH_SIZE (default: 32)" in help_text


@pytest.mark.parametrize("module_name", COMMANDS)
def test_every_command_uses_the_shared_parser(module_name, monkeypatch):
    """Each command's main() builds a CommandParser (it stops here, before doing any work)."""
    if module_name.startswith("demo."):
        pytest.importorskip("gradio", reason='the demo commands need the extra: pip install -e ".[demo]"')
    module = importlib.import_module(module_name)

    def parsed(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(CommandParser, "parse_args", parsed)
    with pytest.raises(_Parsed) as caught:
        module.main([])
    parser = caught.value.args[0]
    assert isinstance(parser, CommandParser) and not parser.allow_abbrev


MISTAKES = [
    ("ivt_search.__main__", ["query", "{missing}", "a man"]),
    ("demo.build_space", ["{out}", "--index", "{missing}"]),
    ("dataset_scripts.build", ["cuhk-pedes", "{missing}", "{out}"]),
    ("dataset_scripts.pretraining", ["{missing}"]),
    ("dataset_scripts.hub", ["{missing}", "your-name/drawn-pedestrians"]),
    ("modeling_ivt.convert_original_checkpoint", ["--checkpoint", "{missing}", "--output", "{out}"]),
    ("modeling_ivt.convert_vit_bert", ["--vit", "{missing}", "--output", "{out}"]),
    ("modeling_ivt.convert_pretraining", ["{missing}", "--output", "{out}"]),
    ("modeling_ivt.convert_irra_checkpoint", ["--checkpoint", "{missing}", "--output", "{out}"]),
    ("modeling_ivt.export_onnx", ["--model", "{missing}", "--output", "{out}"]),
    ("training.evaluate", ["--model", "{missing}", "--dataset", "{missing}"]),
]


@pytest.mark.parametrize(("module_name", "arguments"), MISTAKES, ids=[name for name, _ in MISTAKES])
def test_a_wrong_path_is_one_line_naming_it(module_name, arguments, tmp_path, capsys):
    missing = str(tmp_path / "not-there")
    argv = [argument.format(missing=missing, out=tmp_path / "out") for argument in arguments]
    if module_name.startswith("demo."):
        pytest.importorskip("gradio", reason='the demo commands need the extra: pip install -e ".[demo]"')
    module = importlib.import_module(module_name)
    try:
        status = module.main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    assert status not in (0, None)
    error = capsys.readouterr().err
    if isinstance(status, str):  # SystemExit(message): Python prints the message as the process ends
        error += status
    assert "Traceback" not in error
    last = error.strip().splitlines()[-1]
    assert missing in last, error
