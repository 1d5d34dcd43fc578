"""Documentation helpers (docs/make_import_graph.py draws docs/import_graph.png)."""
