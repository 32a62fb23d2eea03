"""Run one unit of work (a function of a session) in a transaction: commit or roll back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from control_plane.errors import Conflict
from core.sql import make_engine, session_factory

T = TypeVar("T")


class Store:
    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        self._sessions = session_factory(self.engine)

    def run(self, work: Callable[[Session], T]) -> T:
        """`work(session)` in one transaction, committed if it returns, rolled back if not."""
        with self._sessions() as session:
            try:
                result = work(session)
                session.commit()
                return result
            except StaleDataError:
                session.rollback()
                raise Conflict("the automation was changed by someone else at the same time; "
                               "read it again and retry") from None
            except IntegrityError as exc:
                session.rollback()
                # A race with a concurrent writer (e.g. the same unique name at once).
                raise Conflict("the change conflicts with the stored data (a concurrent change?)"
                               f": {type(exc.orig).__name__}") from None
            except BaseException:
                session.rollback()
                raise

    async def arun(self, work: Callable[[Session], T]) -> T:
        """`run` in a worker thread, so the event loop keeps serving while SQL runs."""
        return await anyio.to_thread.run_sync(self.run, work)

    def dispose(self) -> None:
        self.engine.dispose()
