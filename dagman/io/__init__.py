"""io layer of dagman."""
