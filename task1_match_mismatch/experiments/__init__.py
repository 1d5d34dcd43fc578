"""Task 1 experiments (layer 3: they drive the task's scripts): the accuracy grid."""
