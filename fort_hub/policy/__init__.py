"""The fort-hub access policy: one YAML file read by every plugin.

>>> from fort_hub.policy import load_policy
>>> policy = load_policy("policy.yaml")            # doctest: +SKIP
>>> policy.authorize("alice", ["urls-study"], "query", "url_shares")  # doctest: +SKIP
Decision(allowed=True, reason="grants[0] gives 'query' on 'url_shares' to 'urls-study'")
"""

from .loader import PolicyError, PolicyIssue, load_policy, parse_policy, parse_size
from .model import (
    ACTIONS,
    DATASET_ACTIONS,
    AwsSettings,
    Dataset,
    Decision,
    Grant,
    Group,
    Member,
    Policy,
    Profile,
    Quota,
    role_name,
)
from .reload import PolicyWatcher

__all__ = [
    "ACTIONS",
    "DATASET_ACTIONS",
    "AwsSettings",
    "Dataset",
    "Decision",
    "Grant",
    "Group",
    "Member",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "PolicyWatcher",
    "Profile",
    "Quota",
    "load_policy",
    "parse_policy",
    "parse_size",
    "role_name",
]
