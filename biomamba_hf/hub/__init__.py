"""Hub publishing: the model card (:mod:`.card`) and the one-commit push (:mod:`.push`)."""

from .card import (
    MODEL_INDEX_TABLE,
    ResultSpec,
    RunRecord,
    attach_model_card,
    collect_eval_results,
    count_parameters,
    load_run,
    lookup_metric,
    plot_training_curves,
    render_model_card,
    save_model_card,
    save_run_arguments,
)
from .push import MODEL_FILES, TOKENIZER_FILES, UploadPlan, format_file_list, plan_upload, push_to_hub

__all__ = [
    "MODEL_FILES",
    "MODEL_INDEX_TABLE",
    "TOKENIZER_FILES",
    "ResultSpec",
    "RunRecord",
    "UploadPlan",
    "attach_model_card",
    "collect_eval_results",
    "count_parameters",
    "format_file_list",
    "load_run",
    "lookup_metric",
    "plan_upload",
    "plot_training_curves",
    "push_to_hub",
    "render_model_card",
    "save_model_card",
    "save_run_arguments",
]
