"""tasks layer of dagman."""
