"""Task definitions, datasets, partitioning and metrics: everything that differs between tasks."""
