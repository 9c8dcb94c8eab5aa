"""fort-groups: study groups with expiring membership (``python -m fort_hub.services.groups``)."""

from .app import GroupsService
from .reconcile import OWNER_KEY, Change, Reconciler, desired_members, owned

__all__ = ["OWNER_KEY", "Change", "GroupsService", "Reconciler", "desired_members", "owned"]
