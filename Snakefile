"""pathfuse: whole-slide images → tiles → embeddings per FM → expert heads → fusers → tables.

Run `snakemake --cores all` (the demo) or `snakemake --cores all --configfile my.yaml`.
The config is validated against pathfuse's schemas (src/pathfuse/resources/schemas/) before any
job starts; the stages live in workflow/rules/*.smk and call the library in src/pathfuse/ (see
docs/architecture.md). An installed pathfuse carries this file: `pathfuse workflow-path`.
"""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from pathfuse.config import Config, ConfigError, validate_config  # noqa: E402
from pathfuse.paths import REPORT_PLOTS, REPORT_TABLES, shard_index, shard_name  # noqa: E402
from pathfuse.plan import Planner  # noqa: E402
from pathfuse.plan.external import evaluate_external_plan, external_targets, predict_plan  # noqa: E402

# The demo config only when no --configfile is given: merged under a user's config, its short
# demo schedules would leak into a real run.
if not workflow.overwrite_configfiles:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


report: "workflow/report/workflow.rst"


try:
    _validated = validate_config(config)
except ConfigError as err:
    raise WorkflowError(f"pathfuse: {err}") from None
config.clear()
config.update(_validated)

CFG = Config(config)
L = CFG.layout
TASKS = CFG.task_ids
# The job plan: every rule's inputs and settings digest (params) come from here, and the
# library's own resume checks use the same plan (docs/architecture.md, "Job plan").
PLAN = Planner(CFG)
try:
    PLAN.check()
except (ConfigError, OSError) as err:
    raise WorkflowError(f"pathfuse: {err}") from None
DEMO = CFG.section("demo")
DEMO_DONE = [str(Path(DEMO["out_dir"]) / "demo.done")] if DEMO.get("enabled") else []


wildcard_constraints:
    cohort=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    encoder=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    task=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    shard=r"shard\d{4}",


localrules:
    all,
    tile_index,
    report,


rule all:
    default_target: True
    input:
        PLAN.report_outputs()["tables"],
        external_targets(PLAN),


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/embedding.smk"
include: "workflow/rules/experts.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/external.smk"
include: "workflow/rules/report.smk"
