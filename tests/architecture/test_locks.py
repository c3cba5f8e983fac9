"""Row locks are taken in one module per context (ARCHITECTURE.md, "Locks"), so the
lock order can be read in one place: ``select_for_update`` appears only in a
``locks.py`` module, and in the event bus (claiming outbox rows).

The source is read as Python (ast), so a comment or a sentence mentioning the method
does not count; a call, a reference or the method's name as a string (``getattr``)
does."""

import ast
from pathlib import Path

import pytest

from .contexts import selling_packages

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "iaas"
LOCKING = "select_for_update"
ALSO_ALLOWED = {"iaas/contracts/bus.py"}  # the outbox claim is the bus's own lock


def allowed_to_lock(path: str) -> bool:
    return Path(path).name == "locks.py" or path in ALSO_ALLOWED


def lock_statements(path: str, source: str) -> list[str]:
    """Every place in ``source`` that names ``select_for_update``, as ``path:line``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        named = (
            (isinstance(node, ast.Attribute) and node.attr == LOCKING)
            or (isinstance(node, ast.Name) and node.id == LOCKING)
            or (isinstance(node, ast.Constant) and node.value == LOCKING)
        )
        if named:
            found.append(f"{path}:{node.lineno}")
    return sorted(found, key=lambda place: int(place.rsplit(":", 1)[1]))


def locks_outside_lock_modules(sources: dict[str, str]) -> list[str]:
    """The lock statements of ``sources`` ({repository path: source}) outside the
    modules allowed to lock."""
    return [
        place
        for path, source in sorted(sources.items())
        if not allowed_to_lock(path)
        for place in lock_statements(path, source)
    ]


def tree_sources() -> dict[str, str]:
    return {
        path.relative_to(REPO).as_posix(): path.read_text()
        for path in SOURCE.rglob("*.py")
        if "migrations" not in path.relative_to(SOURCE).parts
    }


def test_rows_are_locked_only_in_lock_modules_and_the_bus():
    offending = locks_outside_lock_modules(tree_sources())
    assert offending == [], (
        "select_for_update outside a locks.py module (move it into the context's locks.py "
        "as a helper and call that): " + ", ".join(offending)
    )


def test_the_scan_sees_the_lock_modules():
    """The scan reads the tree it guards: every lock module and the bus lock rows, and
    the scan finds them (an empty or wrong glob would pass the test above)."""
    sources = tree_sources()
    locking = {path for path, source in sources.items() if lock_statements(path, source)}
    # A context whose rows are all locked by the kit's helpers (a metered context's
    # services, its allowance) needs no module of its own; one that has one locks there.
    own = {f"{package.replace('.', '/')}/locks.py" for package in selling_packages().values()}
    selling = {path for path in own if path in sources}
    assert {
        "iaas/billing/locks.py",
        *selling,
        "iaas/spending/locks.py",
        "iaas/api/locks.py",
        "iaas/contracts/bus.py",
    } <= locking
    assert selling, "no selling context has a lock module: is the glob right?"
    assert not any("/migrations/" in path for path in sources)


@pytest.mark.parametrize(
    ("path", "source", "offending"),
    [
        (
            "iaas/billing/services.py",
            "def f():\n    x = 1\n    return Wallet.objects.select_for_update(no_key=True).get(pk=x)\n",
            ["iaas/billing/services.py:3"],
        ),
        (
            "iaas/cloud/batch.py",
            "rows = qs.filter(a=1)\nrows = rows.select_for_update(skip_locked=True)\n",
            ["iaas/cloud/batch.py:2"],
        ),
        (
            "iaas/spending/spender.py",
            "lock = getattr(Allowance.objects, 'select_for_update')\n",
            ["iaas/spending/spender.py:1"],
        ),
        (
            "iaas/contracts/events.py",  # the bus is allowed, not the rest of contracts
            "from django.db.models import QuerySet\nQuerySet.select_for_update\n",
            ["iaas/contracts/events.py:2"],
        ),
    ],
)
def test_a_lock_outside_a_lock_module_is_named_by_file_and_line(path, source, offending):
    assert locks_outside_lock_modules({path: source}) == offending


def test_lock_modules_the_bus_and_mere_mentions_pass():
    sources = {
        "iaas/billing/locks.py": "Wallet.objects.select_for_update(no_key=True)\n",
        "iaas/contracts/bus.py": "OutboxMessage.objects.select_for_update(skip_locked=True)\n",
        "iaas/settings/base.py": "# select_for_update is a no-op on SQLite\nX = 1\n",
    }
    assert locks_outside_lock_modules(sources) == []
