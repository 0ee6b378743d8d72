"""The config's machinery: resolvers, schemas, the compose helper and the checks made before a run."""

from __future__ import annotations

from pix2pix.config.resolvers import register_resolvers
from pix2pix.config.schema import register_schemas


def register() -> None:
    """What composing conf/ needs in this process: the resolvers and the schemas (idempotent)."""
    register_resolvers()
    register_schemas()
