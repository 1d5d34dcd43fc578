"""`python -m synthetic {task2,kul} --out DIR ...` (see synthetic/__init__.py)."""
from synthetic import main
from util.errors import run_cli

run_cli(main)
