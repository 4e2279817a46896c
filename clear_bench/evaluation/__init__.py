"""Cross-validation of MIL heads on cached bags, and the statistics that compare encoders.

Modules: :mod:`bags` (Bag, padding), :mod:`splits` (fingerprinted patient-level K-fold),
:mod:`training` (one fold), :mod:`crossval` (all folds, content-addressed results), :mod:`metrics`,
:mod:`bootstrap`, :mod:`compare` (paired tests, Holm, DeLong).
"""
