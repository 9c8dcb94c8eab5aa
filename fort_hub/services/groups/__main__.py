"""``python -m fort_hub.services.groups``"""

from ..base import launch
from .app import GroupsService

if __name__ == "__main__":
    launch(GroupsService)
