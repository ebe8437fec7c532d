"""No function in `services/` is over 60 lines (the working agreement's "~60"), with a shrinking allowlist.

A function's length is from its `def` line to its last line (`ast` positions; decorators not counted),
docstring and comments included: what a reader scrolls through. Migrations are frozen history and are not
scanned. The allowlist names exactly the functions still over the limit today; an entry whose function is
no longer over it (split, shortened, renamed or gone) fails the test too, so the list can only shrink: delete
its line when you split the function.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 60

# "path:function" (nested and methods by their own name). Only ever remove lines from this set.
ALLOWED_OVER: frozenset[str] = frozenset()  # empty since intake's create_case was split (issue #16)


def function_lengths(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """("path:name", lines) of every function and method in a file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    relative = path.relative_to(root).as_posix()
    return [
        (f"{relative}:{node.name}", (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def over_limit(root: Path) -> dict[str, int]:
    """Every function over LIMIT lines under `root/services` (migrations excluded), by "path:name"."""
    found: dict[str, int] = {}
    for path in sorted((root / "services").rglob("*.py")):
        if "migrations" in path.relative_to(root).parts:
            continue
        for name, lines in function_lengths(path, root):
            if lines > LIMIT:
                found[name] = max(lines, found.get(name, 0))
    return found


@functools.cache
def over_in_repository() -> dict[str, int]:
    return over_limit(ROOT)  # parsed once for both tests


def test_no_function_in_services_is_over_60_lines() -> None:
    scanned = sum(1 for p in (ROOT / "services").rglob("*.py") if "migrations" not in p.parts)
    assert scanned > 50, "the scan must see the services"
    over = over_in_repository()
    new = {name: lines for name, lines in over.items() if name not in ALLOWED_OVER}
    assert new == {}, (
        f"functions over {LIMIT} lines (split them; the allowlist only shrinks):\n"
        + "\n".join(f"  {name}: {lines} lines" for name, lines in sorted(new.items()))
    )


def test_the_allowlist_names_only_functions_still_over() -> None:
    over = over_in_repository()
    stale = sorted(ALLOWED_OVER - over.keys())
    assert stale == [], (
        "no longer over the limit (or gone): remove from ALLOWED_OVER in tests/test_function_length.py:\n  "
        + "\n  ".join(stale)
    )


def test_the_scan_measures_def_to_last_line_and_skips_migrations(tmp_path: Path) -> None:
    # The scan itself can fail: a 61-line function (method, nested, async) is seen; 60 lines is not; a
    # migration is not scanned; decorators do not count.
    def body(indent: int) -> str:
        return "".join(" " * indent + f"x{i} = {i}\n" for i in range(59))

    package = tmp_path / "services" / "demo"
    (package / "migrations" / "versions").mkdir(parents=True)
    (package / "mod.py").write_text(
        "@decorator\n@another\ndef sixty():\n" + body(4)  # 1 + 59 lines
        + "class C:\n    async def sixty_one(self):\n" + body(8) + "        return 1\n"
        + "def outer():\n    def inner():\n" + body(8) + "        return 1\n    return inner\n"
    )
    (package / "migrations" / "versions" / "0001.py").write_text("def upgrade():\n" + body(4) * 2)
    lengths = dict(function_lengths(package / "mod.py", tmp_path))
    assert lengths["services/demo/mod.py:sixty"] == 60
    assert lengths["services/demo/mod.py:sixty_one"] == 61
    assert lengths["services/demo/mod.py:inner"] == 61
    assert over_limit(tmp_path) == {
        "services/demo/mod.py:sixty_one": 61,
        "services/demo/mod.py:inner": 61,
        "services/demo/mod.py:outer": 63,
    }
