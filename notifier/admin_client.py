"""The notifier's client of the admin API: it disables an automation through the control
plane (so its SQL row, the config snapshot, ingress (409) and streams all agree), never by
writing the snapshot itself."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DisableResult:
    ok: bool  # disabled now or before
    gone: bool = False  # the automation no longer exists
    detail: str = ""


class AdminClient:
    """`token` is the notifier's own (HOOKSTREAM_NOTIFIER_ADMIN_TOKEN): the admin API lets it
    disable and enable automations and answers 403 to anything else."""

    def __init__(self, admin_url: str, token: str, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            base_url=admin_url.rstrip("/"), timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {token}"})

    async def disable(self, automation_id: str, reason: str) -> DisableResult:
        try:
            resp = await self._client.post(f"/v1/automations/{automation_id}/disable",
                                           json={"reason": reason})
        except httpx.HTTPError as exc:
            return DisableResult(False, detail=f"admin API unreachable: {type(exc).__name__}")
        if resp.is_success:
            return DisableResult(True)
        if resp.status_code == 404:
            return DisableResult(False, gone=True, detail="the automation does not exist")
        return DisableResult(False, detail=f"admin API answered {resp.status_code}: "
                                           f"{resp.text[:200]}")

    async def close(self) -> None:
        await self._client.aclose()
