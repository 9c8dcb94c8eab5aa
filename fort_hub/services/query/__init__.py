"""fort-query: the SQL proxy service (``python -m fort_hub.services.query``)."""

from .app import QueryService

__all__ = ["QueryService"]
