"""Keys only where they are used: in production a service that keeps no encrypted or indexed data
starts without MKR_ENCRYPTION_KEY/MKR_INDEX_KEY, and one that does refuses to start without them.
Every backend service now seals something (names, free text, webhook secrets) with the encryption key;
only intake keeps the blind index, and the console keeps no case data at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.crypto import FieldCipher, SearchIndexer
from shared.settings import Settings
from tests.support import create_app


def _production(tmp_path: Path, **values: object) -> Settings:
    return Settings(
        environment="production",
        state_dir=tmp_path,
        database_url="postgresql://mkr_x:pw@127.0.0.1:1/mkr_x",
        jwt_jwks_url="https://idp.example.org/jwks",
        **values,  # type: ignore[arg-type]
    )


def test_production_settings_no_longer_demand_keys_of_every_service(tmp_path: Path) -> None:
    settings = _production(tmp_path)
    with pytest.raises(RuntimeError, match="MKR_ENCRYPTION_KEY"):
        FieldCipher.from_settings(settings)
    with pytest.raises(RuntimeError, match="MKR_INDEX_KEY"):
        SearchIndexer.from_settings(settings)
    assert not list(tmp_path.iterdir()), "production never writes a key of its own to disk"


@pytest.mark.parametrize("service", ["intake", "referral", "shelter", "notifications"])
def test_a_service_that_uses_a_key_refuses_to_start_without_it(tmp_path: Path, service: str) -> None:
    with pytest.raises(RuntimeError, match="MKR_ENCRYPTION_KEY"):
        create_app(service, _production(tmp_path))


def test_intake_needs_the_index_key_too(tmp_path: Path) -> None:
    import base64
    import os

    key = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(RuntimeError, match="MKR_INDEX_KEY"):
        create_app("intake", _production(tmp_path, encryption_key=key))
    create_app("intake", _production(tmp_path, encryption_key=key, index_key=base64.b64encode(os.urandom(32)).decode()))


@pytest.mark.parametrize("service", ["referral", "shelter", "notifications"])
def test_a_service_without_a_blind_index_starts_without_the_index_key(tmp_path: Path, service: str) -> None:
    import base64
    import os

    app = create_app(service, _production(tmp_path, encryption_key=base64.b64encode(os.urandom(32)).decode()))
    assert app.title
