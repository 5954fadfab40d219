"""Dataset loaders and preprocessing."""
