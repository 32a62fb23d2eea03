"""A failed statement's error never carries its parameters (issue 15, item 4): engines are
made with hide_parameters, and PostgreSQL's DETAIL (`Key (email)=(...) already exists`) is
dropped, so logging the exception cannot write a respondent's address."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.exc import IntegrityError

from core.sql import make_engine

ADDRESS = "ada.lovelace@example.com"


def test_a_failed_statement_does_not_show_its_parameters(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    meta = MetaData()
    people = Table("people_t", meta, Column("id", Integer, primary_key=True),
                   Column("email", String(200), nullable=False, unique=True))
    engine = make_engine(db_url)
    try:
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(people).values(id=1, email="someone@example.com"))
            conn.execute(insert(people).values(id=2, email=ADDRESS))
        log = logging.getLogger("tests.sql")
        with pytest.raises(IntegrityError) as info, engine.begin() as conn:
            conn.execute(insert(people).values(id=3, email=ADDRESS))  # the address is taken
        log.error("statement failed: %s", info.value, exc_info=info.value)
        assert "hidden" in str(info.value)  # SQLAlchemy says it held them back
        assert ADDRESS not in str(info.value)
        assert ADDRESS not in caplog.text
    finally:
        engine.dispose()
