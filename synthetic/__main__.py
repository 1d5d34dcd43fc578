"""`python -m synthetic {task2,kul} --out DIR ...` (see synthetic/__init__.py)."""
if not __package__:  # run by path (python synthetic/__main__.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702
from synthetic import main
from util.errors import run_cli

run_cli(main)
