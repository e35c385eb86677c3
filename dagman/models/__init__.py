"""models layer of dagman."""
