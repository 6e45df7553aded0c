"""The periodic expunge task of a deletion-policy category (``vm``, ``volume``, ``image``; reference §3.10).

:func:`install` starts task ``<category>-expunge`` that runs every ``<category>/expungeInterval`` seconds and
restarts whenever ``expungeInterval``, ``expungePeriod`` or ``deletionPolicy`` of that category changes.
:func:`cutoff` gives the ``lastOpDate`` bound of items due, or None when the *current* policy is ``Never``
(so switching Never → Delay later expunges what was kept).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from controller.core import Controller
from controller.util import iso_in
from zsutil.tasks import every

NAMES = ("expungeInterval", "expungePeriod", "deletionPolicy")


def policy(core: Controller, category: str) -> str:
    return str(core.services["configs"].get(category, "deletionPolicy"))


def cutoff(core: Controller, category: str) -> str | None:
    """Items whose lastOpDate <= the returned time are due; None: nothing is due (policy Never)."""
    if policy(core, category) == "Never":
        return None
    return iso_in(-core.services["configs"].get_int(category, "expungePeriod"))


async def run_due(core: Controller, category: str, select: str,
                  expunge_one: Callable[[str, str], Awaitable[None]]) -> int:
    """One run of a category's task: each uuid ``select`` finds (SQL from code; every ``?`` in it is the
    :func:`cutoff` bound) goes to ``expunge_one(uuid, bound)`` in that item's queue, one after another, so it
    never overlaps an API on the item (it must re-check the item there). Returns how many were due; 0 while
    the policy is Never."""
    bound = cutoff(core, category)
    if bound is None:
        return 0
    rows = await core.db.fetchall(select, (bound,) * select.count("?"))
    for r in rows:
        uuid: str = r["uuid"]
        await core.queues.run(uuid, functools.partial(expunge_one, uuid, bound))
    return len(rows)


def install(core: Controller, category: str, run: Callable[[Controller], Awaitable[object]]) -> None:
    """Start the task and restart it on every change of the category's deletion configs."""
    configs = core.services["configs"]
    name = f"{category}-expunge"

    async def once() -> None:
        await run(core)

    def start() -> None:
        core.tasks.start(name, lambda: every(lambda: configs.get_int(category, "expungeInterval"), once))

    async def restart(category_: str, name_: str, value: str) -> None:
        start()

    for n in NAMES:
        configs.listen((category, n), restart)
    start()
