"""The recommendation pipeline shared by the CLI and the demo: data, trie, decoding, evaluation.

Decoding calls :func:`igdbeam.generate` and training
:func:`igdbeam.training.loss_func.make_compute_loss_func`; both are imported lazily, so this
package works with any igdbeam build that provides them.

Modules: :mod:`.catalog` (MovieLens folder, popularity, the item trie), :mod:`.finetune`
(training), :mod:`.inputs` (prompts, padding, the decoder), :mod:`.recommending` (decoding rows
with several methods), :mod:`.row_filters` (per-row item filters and CF scores),
:mod:`.sharding` (``accelerate`` processes) and :mod:`.rows` (test rows, decoding presets, the
recommendations table). This package re-exports their public names.
"""

from igdbeam.app.pipeline.catalog import (
    CATALOG_SCOPES,
    build_trie,
    catalog_items,
    item_weights,
    popularity,
    prepare_movielens,
    target_positions,
    with_catalog_ids,
)
from igdbeam.app.pipeline.finetune import (
    LOSSES,
    TRAINER_LOSS,
    ExampleDataset,
    make_loss,
    pad_collate,
    train_model,
)
from igdbeam.app.pipeline.inputs import GenerateFn, encode_prompts, left_pad, resolve_decoder
from igdbeam.app.pipeline.recommending import (
    MethodSettings,
    Recommendations,
    recommend,
    recommend_many,
)
from igdbeam.app.pipeline.row_filters import history_exclusions, popularity_log_scores
from igdbeam.app.pipeline.rows import (
    METHODS,
    recommendations_table,
    select_test_rows,
    select_test_users,
)
from igdbeam.app.pipeline.sharding import dist_state, recommend_many_sharded, recommend_sharded

__all__ = [
    "CATALOG_SCOPES",
    "LOSSES",
    "METHODS",
    "TRAINER_LOSS",
    "ExampleDataset",
    "GenerateFn",
    "MethodSettings",
    "Recommendations",
    "build_trie",
    "catalog_items",
    "dist_state",
    "encode_prompts",
    "history_exclusions",
    "item_weights",
    "left_pad",
    "make_loss",
    "pad_collate",
    "popularity",
    "popularity_log_scores",
    "prepare_movielens",
    "recommend",
    "recommend_many",
    "recommend_many_sharded",
    "recommend_sharded",
    "recommendations_table",
    "resolve_decoder",
    "select_test_rows",
    "select_test_users",
    "target_positions",
    "train_model",
    "with_catalog_ids",
]
