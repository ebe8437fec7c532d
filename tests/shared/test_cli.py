"""`mkr token` prints a token the services accept, and refuses nonsense."""

from __future__ import annotations

import uuid

import pytest

from mkr.cli import main
from tests.support import Stack


async def test_mkr_token_is_accepted_by_a_service(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = stack.settings
    monkeypatch.setenv("MKR_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("MKR_JWT_ISSUER", settings.jwt_issuer)
    monkeypatch.setenv("MKR_JWT_AUDIENCE", settings.jwt_audience)
    assert main(["token", "--role", "coordinator", "--municipality", "elbasan", "--ttl", "120"]) == 0
    printed = capsys.readouterr().out.strip()
    response = await stack.intake.get(
        f"/v1/cases/{uuid.uuid4()}", headers={"Authorization": f"Bearer {printed}"}
    )
    assert response.status_code == 404  # authenticated; no such case


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "king", "--municipality", "elbasan"],
        ["--role", "police", "--municipality", "*"],
        ["--role", "police", "--municipality", "elbasan", "--ttl", "0"],
    ],
)
def test_mkr_token_refuses_bad_arguments(
    args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("MKR_STATE_DIR", str(tmp_path))
    assert main(["token", *args]) == 2


def test_mkr_token_refuses_a_ttl_the_services_would_refuse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MKR_STATE_DIR", str(tmp_path))
    base = ["token", "--role", "police", "--municipality", "elbasan", "--ttl"]
    assert main([*base, "86401"]) == 2
    assert "86400" in capsys.readouterr().err
    monkeypatch.setenv("MKR_JWT_MAX_LIFETIME_SECONDS", "600")
    assert main([*base, "601"]) == 2
    assert main([*base, "600"]) == 0
