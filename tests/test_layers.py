"""The layers: `shared/` imports nothing above it, and the service registry (mkr/registry.py) is the truth.

`shared/` is the library every service uses; `services/` build on it; `mkr/` (the CLI, the launcher, the
permission renderer, the registry) composes them. An import of `services`, `deploy` or `mkr` anywhere
under `shared/` (top level or inside a function) would run an arrow upward: this scan fails on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mkr import registry
from shared.contracts import EVENT_TYPES, TOPIC_SOURCES
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ABOVE_SHARED = ("services", "deploy", "mkr", "tests")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, with its line: `import a.b`, `from a.b import c`, at any depth."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` names a.b too: b may be a module (`from services.shelter import api`).
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return found


def upward(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(path)
        if module.split(".")[0] in ABOVE_SHARED
    ]


def test_shared_imports_nothing_above_it() -> None:
    modules = sorted((ROOT / "shared").rglob("*.py"))
    assert len(modules) > 10, "the scan must see the library"
    arrows = [arrow for path in modules for arrow in upward(path)]
    assert arrows == [], "shared/ must not import services/, deploy/ or mkr/:\n" + "\n".join(arrows)


def test_the_scan_sees_an_upward_import(tmp_path: Path) -> None:
    # The scan itself can fail: each way of importing upward is caught.
    sources = [
        "import services.intake\n",
        "def f():\n    from mkr.registry import REGISTRY\n",
        "import importlib\nimportlib.import_module(\"deploy.x\")\n",
        "from deploy import launcher\n",
    ]
    for number, source in enumerate(sources):
        probe = tmp_path / f"probe{number}.py"
        probe.write_text(source)
        assert [m for _, m in imported_modules(probe) if m.split(".")[0] in ABOVE_SHARED], source
    clean = tmp_path / "clean.py"
    clean.write_text("import shared.db\nfrom sqlalchemy import text\n")
    assert imported_modules(clean) == [(1, "shared.db"), (2, "sqlalchemy"), (2, "sqlalchemy.text")]


def test_services_do_not_import_the_composition_package() -> None:
    arrows = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in ("mkr", "deploy", "tests")
    ]
    assert arrows == []


def test_every_contract_topic_has_one_publishing_service() -> None:
    topics = [spec.topic for spec in registry.REGISTRY if spec.topic]
    assert sorted(topics) == sorted(TOPIC_SOURCES)
    for spec in registry.REGISTRY:
        if spec.topic:
            assert TOPIC_SOURCES[spec.topic] == f"mkr/{spec.name}"
    assert {topic for topic, _ in EVENT_TYPES.values()} <= set(topics)


def test_registry_names_are_unique_and_ports_distinct() -> None:
    assert len(set(registry.APPS)) == len(registry.REGISTRY)
    assert len({spec.default_port for spec in registry.REGISTRY}) == len(registry.REGISTRY)
    for spec in registry.REGISTRY:
        assert spec.name.isalpha() and spec.name.islower(), "MKR_<NAME>_PORT needs a one-word name"
        assert (ROOT / spec.package.replace(".", "/") / "main.py").is_file()
        assert (ROOT / spec.package.replace(".", "/") / "migrations").is_dir() == spec.database


@pytest.mark.parametrize("name", registry.SERVICES)
def test_registry_says_what_each_service_consumes(name: str) -> None:
    # A database URL given: no embedded PostgreSQL started under ./.mkr (and left running) to build an app.
    app = registry.spec(name).create_app(Settings(database_url="postgresql://schema-only@127.0.0.1:1/unused"))
    consumed = {topic for consumer in app.state.consumer_specs for topic in consumer.topics}
    assert consumed == set(registry.spec(name).consumes)


def test_ports_and_console_urls_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MKR_REFERRAL_PORT", "18002")
    monkeypatch.setenv("MKR_CONSOLE_SHELTER_URL", "http://shelter:8003/")
    monkeypatch.setenv("MKR_CONSOLE_PUBLIC_URL", "https://mkr.example.org")
    settings = Settings()
    assert registry.port_of(settings, "referral") == 18002
    assert registry.port_of(settings, "intake") == 8001  # the registry's default
    upstreams = registry.console_upstreams(settings)
    assert upstreams["shelter"] == "http://shelter:8003"
    assert upstreams["referral"] == "http://127.0.0.1:18002"
    assert "public" not in upstreams and settings.console_public_url == "https://mkr.example.org"
    with pytest.raises(ValueError, match="unknown service"):
        registry.spec("billing")


def test_no_module_of_a_service_imports_its_router() -> None:
    # Routes are adapters: what two route modules share lives in a module both import (e.g. shelter's
    # context.py), and only main.py assembles the routers.
    arrows = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "services").rglob("*.py"))
        if path.name != "main.py"
        for line, module in imported_modules(path)
        if module.startswith("services.") and module.endswith(".api")
    ]
    assert arrows == []


@pytest.mark.parametrize("name", registry.SERVICES)
def test_each_service_declares_its_tables_on_its_own_registry(name: str) -> None:
    # One table registry per service (a SQLModel base with `registry=registry()`), never SQLModel's
    # default metadata, which every service imported into one process would share.
    import importlib

    from sqlmodel import SQLModel

    models = importlib.import_module(f"{registry.spec(name).package}.models")
    tables = [
        obj for obj in vars(models).values()
        if isinstance(obj, type) and obj.__module__ == models.__name__ and hasattr(obj, "__table__")
    ]
    assert tables, f"{name} declares no table"
    metadatas = {id(obj.__table__.metadata) for obj in tables}
    assert len(metadatas) == 1, f"{name}'s tables sit on {len(metadatas)} registries"
    assert all(obj.__table__.metadata is not SQLModel.metadata for obj in tables)


def test_one_column_style_no_raw_table_attribute() -> None:
    # Columns: `col(Model.field)` in ORM queries, `table_of(Model).c.field` in Core statements
    # (shared/db.py); `Model.__table__` with a type-ignore is the third style this replaces.
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "services").rglob("*.py"))
        if "migrations" not in path.parts and ".__table__" in path.read_text()
    ]
    assert offenders == []


def test_plumbing_is_written_once() -> None:
    # The outbox's NOTIFY trigger wakes the relay (tests/shared/test_outbox_notify.py): no hand-written wake;
    # every LISTEN goes through shared/listener.py.
    sources = {
        path: path.read_text()
        for root in ("services", "shared")
        for path in sorted((ROOT / root).rglob("*.py"))
        if "migrations" not in path.parts
    }
    woken = [str(p.relative_to(ROOT)) for p, text in sources.items() if "relay.wake()" in text]
    assert woken == []
    listening = [
        str(p.relative_to(ROOT)) for p, text in sources.items()
        if "add_listener(" in text and p != ROOT / "shared" / "listener.py"
    ]
    assert listening == []


def _application_layer(name: str) -> dict[str, bool]:
    package = ROOT / Path(*registry.spec(name).package.split("."))
    commands = (package / "commands.py").is_file() or (package / "commands" / "__init__.py").is_file()
    return {"access.py": (package / "access.py").is_file(), "commands.py (or commands/)": commands}


@pytest.mark.parametrize("name", registry.SERVICES)
def test_each_backend_service_has_its_access_rules_and_commands(name: str) -> None:
    # Issue #13: per service, who may (access.py) and its business transactions (commands.py, or a commands/
    # package) in one place each; routes are adapters (docs/ARCHITECTURE.md, "Inside a service").
    missing = [part for part, present in _application_layer(name).items() if not present]
    assert missing == [], f"services/{name} lacks {', '.join(missing)}"



def test_building_the_apps_starts_no_database(tmp_path: Path) -> None:
    """An app is built without touching a database (`python -m mkr.permissions` builds them all): with no
    MKR_DATABASE_URL, resolving the server would start the embedded one under the state directory."""
    settings = Settings(state_dir=tmp_path, database_url=None)
    for name in registry.SERVICES:
        registry.spec(name).create_app(settings)
    assert not (tmp_path / "pg").exists()
