"""Cross-validation of MIL heads on cached bags, and the statistics that compare encoders.

The call sequence of one task (every encoder and aggregator shares the splits)::

    from clear_bench.evaluation.bags import pad_bags
    from clear_bench.evaluation.bootstrap import summarize
    from clear_bench.evaluation.compare import all_pairs, compare_pairs, declared_pairs
    from clear_bench.evaluation.crossval import permute_labels, run_crossval
    from clear_bench.evaluation.splits import ensure_splits
    from clear_bench.evaluation.settings import TrainConfig

    splits = ensure_splits(task_dir / "splits", labels, label_type, k=5, seed=0, val_fraction=0.2,
                           patient_of=None)                       # saved once, fingerprinted, reused
    for each encoder:
        padded = pad_bags(load_bags(...), splits.scan_ids, cap=config.eval_max_instances)
        for each aggregator:
            result = run_crossval(padded, labels, label_type, label_names, splits, aggregator_spec,
                                  options, config, bagset_fingerprint=..., results_dir=task_dir / "folds")
            summary = summarize(result, n_boot=2000, seed=0)     # mean +- std, bootstrap CI, per label
    pairs = declared_pairs(encoder_roles, head_ids)              # floor, random-init twin, baselines
    comparisons = compare_pairs({row_name: result, ...}, pairs)  # paired resamples, Holm, DeLong
    matrix = all_pairs({row_name: result, ...})                  # exploratory, Holm over the matrix

Modules: :mod:`bags` (Bag, padding, instance subsets), :mod:`splits` (patient-level stratified K-fold,
fingerprints, :func:`~splits.require_same_splits`), :mod:`training` (TrainConfig, one fold),
:mod:`crossval` (all folds, content-addressed fold results, label permutations), :mod:`metrics`,
:mod:`bootstrap`, :mod:`compare`, :mod:`inputs` (CLEAR-layout HDF5 folders and label CSVs),
:mod:`synthetic` (planted-signal bags for tests and benchmarks).
"""
