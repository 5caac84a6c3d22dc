"""Stage 3 report: tables, figures and their human-readable copies.

Benchmark tables (``tables``, ``fusion_tables``), figures (``plots``, ``fusion_plots``,
``attention``, ``curves``), Markdown/HTML copies (``markdown``, ``rendering``) and the stage entry
:func:`pathfuse.report.run.build_report`.
"""
