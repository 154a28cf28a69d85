"""Online ranking: label join, trainer, settings, metrics."""
