"""task2_regression/models package."""
