"""The fort notebook client (``pip install fort-hub[client]``): no jupyterhub import needed.

from fort_hub.client import FortClient
table = FortClient().query("SELECT * FROM url_shares LIMIT 10", dataset="url_shares")

In IPython/Jupyter, ``%load_ext fort_hub.client`` adds the ``%%fort_sql`` cell magic.
"""

from .client import FortClient, FortQueryError, FortQueryFailed, FortQuotaExceeded, FortRefused

__all__ = ["FortClient", "FortQueryError", "FortQueryFailed", "FortQuotaExceeded", "FortRefused"]


def load_ipython_extension(ipython) -> None:
    """``%load_ext fort_hub.client``: the ``%%fort_sql`` cell magic (fort_hub.client.magic)."""
    from .magic import load_ipython_extension as load

    load(ipython)
