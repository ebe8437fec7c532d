"""HTTP routes of the shelter service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.auth import AnyRole

router = APIRouter(prefix="/v1", tags=["shelters"])


@router.get("/shelters")
async def list_shelters(principal: AnyRole) -> list[dict[str, Any]]:
    return []
