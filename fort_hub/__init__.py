"""fort-hub: FORT-style research-data platform plugins for JupyterHub."""

__version__ = "0.1.0.dev0"
