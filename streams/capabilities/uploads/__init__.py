"""The client side of uploads (CLI, main job, tests, benchmark)."""
