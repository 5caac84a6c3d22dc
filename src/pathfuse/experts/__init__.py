"""Stage 2a: train one encoder's expert head on one task, all folds (rule ``expert``).

Per outer fold the head is trained on the fold's training samples with checkpoint choice on
its validation samples (METHODS.md §2), then predicts train (in-sample), val and test. An
inner patient-level k-fold on the training samples gives out-of-fold logits (``oof=True``
rows): LogitProd needs logits of training samples from models that never saw them, to
estimate the experts' error correlation and to train its gate on unbiased inputs. Inner
models stop on the outer validation set, which none of them trains on.

Outputs (docs/architecture.md): ``predictions.parquet`` (schema ``predictions``), per fold
``fold{k}.safetensors`` (weights of the outer model), ``training_curve.parquet`` (the
report plots it) and ``attention.parquet`` (each test tile's attention,
:mod:`pathfuse.attention`). All heads of the job (every fold's outer and inner models) train
together in one head bank (:mod:`pathfuse.heads.bank`, docs/methods.md). Each finished fold is
then kept as a hidden partial file; a rerun reuses the folds it finds finished and trains the
others in one bank; the partial files are removed once ``predictions.parquet`` exists.

Modules: :mod:`~pathfuse.experts.run` (stage entry and the job's final outputs),
:mod:`~pathfuse.experts.job` (what a job loads once), :mod:`~pathfuse.experts.fold` (each
fold's plan and heads, the bank, each fold's outputs), :mod:`~pathfuse.experts.predict` (prediction and attention rows),
:mod:`~pathfuse.experts.resume` (fold fingerprints and partial files).
"""
