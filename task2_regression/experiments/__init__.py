"""task2_regression/experiments package."""
