"""External cohorts and new slides: a run's trained experts and fusion models applied to another cohort."""
