"""Background asyncio tasks: the one way every service stops its own."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until each has ended. Their CancelledError is the one asked
    for and is not passed on; any other failure of a task is."""
    live = [task for task in tasks if task is not None]
    for task in live:
        task.cancel()
    for task in live:
        try:
            await task
        except asyncio.CancelledError:
            pass  # the cancellation asked for just above
