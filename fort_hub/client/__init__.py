"""The fort notebook client (``pip install fort-hub[client]``): no jupyterhub import needed.

from fort_hub.client import FortClient
table = FortClient().query("SELECT * FROM url_shares LIMIT 10", dataset="url_shares")
"""

from .client import FortClient, FortQueryError

__all__ = ["FortClient", "FortQueryError"]
