"""report layer of dagman."""
