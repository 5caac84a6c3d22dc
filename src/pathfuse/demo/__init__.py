"""The synthetic demo cohort (rule ``demo_data``): slides, tile datasets, label tables, splits.

Modules: :mod:`~pathfuse.demo.generate` (stage entry, the demo's tasks, jobs, manifest),
:mod:`~pathfuse.demo.design` (each task's design: which latent factor drives its label),
:mod:`~pathfuse.demo.cohort` (patients, slides, labels), :mod:`~pathfuse.demo.splits` (split
CSVs), :mod:`~pathfuse.demo.tissue` (the H&E renderer), :mod:`~pathfuse.demo.slides` (pyramidal
TIFFs), :mod:`~pathfuse.demo.tiles` (tile datasets). Nothing here is read by a later stage
except through the files it writes.
"""
