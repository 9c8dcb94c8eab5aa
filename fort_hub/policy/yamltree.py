"""The policy file as YAML: every value with its line, problems collected as
:class:`PolicyIssue` (file, line, dotted key path, message), the node count bounded.

:class:`Tree` builds plain data from PyYAML's node tree (libyaml's composer when PyYAML has it)
and records the line of every path, so the validator (:mod:`.loader`) names where a problem is;
a value that cannot be read is :data:`INVALID`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

#: a policy with more values than this is refused (guards against YAML alias bombs)
MAX_NODES = 200_000


@dataclass(frozen=True)
class PolicyIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class PolicyError(ValueError):
    """A policy file is invalid. ``errors`` lists every problem found, each naming file,
    line and dotted key path, e.g. ``grants[2].datasets[0]: unknown dataset 'url_share'``."""

    def __init__(self, errors: list[PolicyIssue]):
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{len(errors)} error(s) in policy:\n{lines}")


def fmt_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Tree:
    """YAML data plus the line of every node, keyed by path."""

    def __init__(self, file: str):
        self.file = file
        self.lines: dict[tuple, int] = {}
        self.errors: list[PolicyIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._stack: set[int] = set()
        self._built = 0

    def error(self, path: tuple, message: str, line: int | None = None) -> None:
        if line is None:
            # nearest ancestor with a known line
            p = path
            while p not in self.lines and p:
                p = p[:-1]
            line = self.lines.get(p, 1)
        self.errors.append(PolicyIssue(self.file, line, fmt_path(path), message))

    def build(self, node: yaml.Node, path: tuple = ()) -> Any:
        self.lines[path] = node.start_mark.line + 1
        self._built += 1
        if self._built > MAX_NODES:
            if self._built == MAX_NODES + 1:
                self.error(path, f"the policy is too large (more than {MAX_NODES} values)")
            return INVALID
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._stack:
            self.error(path, "a YAML alias refers to a value that contains it (recursion)")
            return INVALID
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(n, path + (i,)) for i, n in enumerate(node.value)]
        finally:
            self._stack.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: tuple) -> dict:
        out: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.error(path, "mapping keys must be plain scalars", key_node.start_mark.line + 1)
                continue
            key = key_node.value
            if key in out:
                self.error(path + (key,), "duplicate key", key_node.start_mark.line + 1)
                continue
            out[key] = self.build(value_node, path + (key,))
        return out

    def _scalar(self, node: yaml.ScalarNode, path: tuple) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ValueError, yaml.YAMLError) as e:
            if node.tag.endswith(":timestamp"):
                self.error(path, f"{node.value!r} is not a valid date: {e}")
            else:
                self.error(path, f"cannot read value {node.value!r}: {e}")
            return INVALID


class Invalid:
    def __repr__(self):
        return "<invalid>"


INVALID = Invalid()


def typename(value) -> str:
    if value is None:
        return "nothing"
    if value is INVALID:
        return "an unreadable value"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


#: libyaml's parser when PyYAML has it: the same nodes and marks, about 9x faster (a policy of
#: 10,000 users in 1,000 groups: 1.4 s to compose in pure Python, 0.17 s with libyaml)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The YAML node tree; invalid YAML raises PyYAML's own error (its messages read better
    than libyaml's: the file is parsed again in pure Python, only when it is invalid)."""
    try:
        return yaml.compose(text, Loader=YAML_LOADER)
    except yaml.YAMLError:
        if YAML_LOADER is yaml.SafeLoader:
            raise
    return yaml.compose(text, Loader=yaml.SafeLoader)
