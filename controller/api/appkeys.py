"""The aiohttp application keys of the controller, in a module that imports nothing of the API, so any
request handler (``controller.api.http``, ``controller.compute.events``, the web console) can read them."""

from __future__ import annotations

from aiohttp import web

from controller.core import Controller

#: The :class:`Controller` an application serves.
CORE = web.AppKey("core", Controller)
