"""System and user tags (reference §3.4): patterns, validators, APIs, change listeners."""

from controller.tags.service import RESOURCE_TYPES, Tags, register_pattern

__all__ = ["RESOURCE_TYPES", "Tags", "register_pattern"]
