"""One rule merges settings everywhere: built-in defaults < the YAML file < options typed on the command line
(``--set KEY=VALUE`` for a study; only the options a user actually typed, for ``thyro pretrain``)."""

from __future__ import annotations

import copy
from typing import Any

from thyro.errors import ConfigError


def merge(base: dict, overrides: dict[str, Any], source: str = "override") -> dict:
    """``base`` with dotted-key ``overrides`` applied (``train.epochs``, ``arms.0.lr``); returns a new dict.

    Raises :class:`ConfigError` naming the key when a path does not lead through mappings or list items.
    """
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        node: Any = data
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"{source} {key}: empty part in the key; write e.g. train.epochs=5 or arms.0.lr=0.01")
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[:depth]) or "the configuration"
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{source} {key}: {where} is a list of {len(node)} item(s); address one by "
                                      f"its number, 0 to {len(node) - 1} (got {part!r}).")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"{source} {key}: {where} is {node!r}, a single value; it has no {part!r} inside.")
    return data
