"""ssl layer of dagman."""
