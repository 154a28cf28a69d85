"""The main job (``vitrina demo``) and its stages, and the generators and synthetic data it (and tests and benchmarks) feed the pipeline with. Nothing in the product imports this package."""
