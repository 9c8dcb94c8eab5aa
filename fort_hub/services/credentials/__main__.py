"""``python -m fort_hub.services.credentials``"""

from ..base import launch
from .app import CredentialsService

if __name__ == "__main__":
    launch(CredentialsService)
