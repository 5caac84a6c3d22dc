"""Stage 3 report: benchmark tables (``tables``), figures (``plots``), Markdown/HTML copies
(``markdown``) and the stage entry :func:`pathfuse.report.run.build_report`."""
