"""The HTTP API: ``POST /v1/{ApiName}`` → registry → service. See ``controller.api.http``."""
