"""The stages of a benchmark, plain functions that each read only the previous stage's result.

    plan_run(config, registry)                -> RunPlan      encoders (references added, pretraining
                                                              done or found), tasks loaded, heads
    extract_embeddings(plan, cache, device)   -> Extraction   embeddings in the cache; what failed
    evaluate_task(inputs, bag_sources, heads, protocol, metrics, task_dir)
                                              -> TaskResult   splits, cross-validation, statistics, board
    write_report(task_results, ...)           -> board paths  boards, per-cell results, run.json

:func:`~clear_bench.pipeline.run.run_benchmark` chains them for ``clear-bench run`` and ``evaluate
BENCH.yaml``; :func:`~clear_bench.pipeline.features.evaluate_features` feeds folders of existing
embeddings into the same ``evaluate_task`` and ``write_report`` (``evaluate --features``).
"""

from clear_bench.pipeline.evaluate import EvaluationProtocol, TaskInputs, TaskResult, evaluate_task
from clear_bench.pipeline.extract import Extraction, extract_embeddings
from clear_bench.pipeline.plan import RunPlan, plan_run, resolve_pretrained
from clear_bench.pipeline.report import write_report
from clear_bench.pipeline.run import RunResult, run_benchmark

__all__ = [
    "EvaluationProtocol", "Extraction", "RunPlan", "RunResult", "TaskInputs", "TaskResult", "evaluate_task",
    "extract_embeddings", "plan_run", "resolve_pretrained", "run_benchmark", "write_report",
]
