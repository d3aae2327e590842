"""Index and query with a model that lives on a Hub (the local HTTP Hub server), by repository id."""

import json
import textwrap

from tests.hub.conftest import hub, run_against  # noqa: F401  (the `hub` fixture)


def test_index_and_query_with_a_hub_model_id(hub, model_dir, benchmark_dir, tmp_path):  # noqa: F811
    repo = "local-user/tiny-ivt-search"
    index_dir = tmp_path / "hub-index"
    result = run_against(
        hub,
        tmp_path,
        textwrap.dedent(
            f"""
            import json
            from modeling_ivt.hub_utils import push_folder_to_hub
            from ivt_search.__main__ import main
            from ivt_search import read_index_metadata
            push_folder_to_hub({str(model_dir)!r}, {repo!r}, "tiny model")
            assert main(["index", {str(index_dir)!r}, "--model", {repo!r}, "--dataset", {str(benchmark_dir)!r}]) == 0
            print("MODEL", read_index_metadata({str(index_dir)!r})["model"]["name_or_path"])
            assert main(["query", {str(index_dir)!r}, "a man in a red coat", "--top-k", "2", "--json"]) == 0
            """
        ),
    )
    assert f"MODEL {repo}" in result.stdout, "the index records the Hub id, and query reloads the model from it"
    hits = json.loads(result.stdout[result.stdout.index("[") :])
    assert [hit["rank"] for hit in hits[0]] == [1, 2]
