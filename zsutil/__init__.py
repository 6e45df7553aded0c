"""Helpers every side needs (DESIGN.md "Import direction"): the one subprocess runner, the reverter, the task
supervisor and the coded-error base. ``zsutil`` imports none of controller, kvmagent, flatnet, storage."""
