"""Imports every module that registers APIs or start-up hooks, in one visible list."""

from controller import globalconfig, identity  # noqa: F401
from controller.api import queries  # noqa: F401
from controller.resources import (  # noqa: F401
    zone,
)
from controller.tags import api as tag_api  # noqa: F401
