"""The `shepard` command line: thin over shepard.flock.Flock."""
