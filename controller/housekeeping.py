"""Supervised clean-up of tables that would otherwise grow forever: finished jobs older than
``api/job.retention`` seconds are deleted every ``api/job.cleanup.interval`` seconds (jobs still
``Processing`` are never touched)."""

from __future__ import annotations

from controller.core import Controller, on_start
from controller.globalconfig import ConfigDef, register_config
from zsutil.tasks import every

register_config(ConfigDef("api", "job.retention", "86400", int, min=60,
                          description="Seconds a finished job (GET /v1/jobs/{uuid}) is kept."))
register_config(ConfigDef("api", "job.cleanup.interval", "600", int, min=1,
                          description="Seconds between two removals of expired finished jobs."))


@on_start(90, "job-cleanup")
async def _start(core: Controller) -> None:
    configs = core.services["configs"]

    async def once() -> None:
        await core.jobs.cleanup(configs.get_int("api", "job.retention"))

    def start() -> None:
        core.tasks.start("job-cleanup", lambda: every(lambda: configs.get_int("api", "job.cleanup.interval"), once))

    async def restart(category: str, name: str, value: str) -> None:
        start()

    for n in ("job.retention", "job.cleanup.interval"):
        configs.listen(("api", n), restart)
    start()
