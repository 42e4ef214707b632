"""The Hydra config turned into typed settings once, at the top of a job, with every key checked (exit 2)."""
