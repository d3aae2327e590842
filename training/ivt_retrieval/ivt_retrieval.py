"""`evaluate` metric for text-based person retrieval: R@1, R@5, R@10, mAP and mINP (percentages), IRRA's protocol.

Load it offline with `evaluate.load("training/ivt_retrieval")`. Add the query side example by example or in batches
(`query_embeds`, `query_person_ids`) and pass the gallery to `compute`. The computation is
`training.metrics.retrieval_metrics` (chunked over queries, bounded memory), so the `ivt-hf` package must be installed.
"""

import datasets
import evaluate
import torch

from training.metrics import DEFAULT_CHUNK_SIZE, retrieval_metrics

_DESCRIPTION = """
Text-to-image person retrieval metrics. Every query (a caption embedding) is ranked against the whole gallery (image
embeddings) by cosine similarity, ties broken by gallery order; a gallery image is relevant when its person id equals
the query's. R@K is the share of queries whose first relevant image is among the top K; AP averages the precision at
the rank of every relevant image (the denominator is all relevant images); INP is the number of relevant images over
the rank of the last one. All are percentages.
"""

_KWARGS_DESCRIPTION = """
Args:
    query_embeds (`list` of `list` of `float`): one embedding per query (normalised inside).
    query_person_ids (`list` of `int`): the person id of each query.
    gallery_embeds (`list` of `list` of `float` or `torch.Tensor`): one embedding per gallery image, same width.
    gallery_person_ids (`list` of `int` or `torch.Tensor`): the person id of each gallery image.
    chunk_size (`int`, *optional*, defaults to 128): queries scored at once.
Returns:
    `dict` with "R@1", "R@5", "R@10", "mAP" and "mINP".
Examples:
    >>> metric = evaluate.load("training/ivt_retrieval")
    >>> metric.compute(query_embeds=[[1.0, 0.0]], query_person_ids=[7],
    ...                gallery_embeds=[[0.0, 1.0], [1.0, 0.1]], gallery_person_ids=[3, 7])
    {'R@1': 100.0, 'R@5': 100.0, 'R@10': 100.0, 'mAP': 100.0, 'mINP': 100.0}
"""

_CITATION = """
@inproceedings{shu2022see,
  title={See Finer, See More: Implicit Modality Alignment for Text-based Person Retrieval},
  author={Shu, Xiujun and Wen, Wei and Wu, Haoqian and Chen, Keyu and Song, Yiran and Qiao, Ruizhi and Ren, Bo and Wang, Xiao},
  booktitle={ECCV Workshops},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IvtRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "query_embeds": datasets.List(datasets.Value("float32")),
                    "query_person_ids": datasets.Value("int64"),
                }
            ),
        )

    def _compute(
        self, query_embeds, query_person_ids, gallery_embeds=None, gallery_person_ids=None, chunk_size=DEFAULT_CHUNK_SIZE
    ):
        if gallery_embeds is None or gallery_person_ids is None:
            raise ValueError("compute() needs gallery_embeds= and gallery_person_ids= (the gallery side)")
        return retrieval_metrics(
            torch.as_tensor(query_embeds, dtype=torch.float32),
            torch.as_tensor(gallery_embeds, dtype=torch.float32),
            torch.as_tensor(query_person_ids, dtype=torch.long),
            torch.as_tensor(gallery_person_ids, dtype=torch.long),
            chunk_size=chunk_size,
        )
