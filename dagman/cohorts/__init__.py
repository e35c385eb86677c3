"""cohorts layer of dagman."""
