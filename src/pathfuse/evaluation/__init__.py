"""Stage 3: score every prediction file of a task, experts and fusers alike (rule ``evaluate``).

Modules: :mod:`~pathfuse.evaluation.run` (stage entry), :mod:`~pathfuse.evaluation.sources`
(which prediction files a task expects), :mod:`~pathfuse.evaluation.scoring` (per-fold scores
on shared resamples), :mod:`~pathfuse.evaluation.reference` (the reference expert and gains
over it), :mod:`~pathfuse.evaluation.table` (the metrics table's rows),
:mod:`~pathfuse.evaluation.foldstats` (the stratified paired per-fold bootstrap),
:mod:`~pathfuse.evaluation.metrics` (metric names, ``score``, ``bootstrap_ci``) on
:mod:`~pathfuse.evaluation.units` with the kernels of :mod:`~pathfuse.evaluation.classification`
and :mod:`~pathfuse.evaluation.survival`.
"""
