"""The ZStack-Py version reported by GetVersion and the OpenAPI document."""

VERSION = "0.1.0"
