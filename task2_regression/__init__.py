"""task2_regression package."""
