"""The contexts' boundaries are verified, not hoped for.

import-linter sees Python imports; it cannot see a ForeignKey given as a string
("billing.Wallet"), so the model graph is checked here too.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.apps import apps

from .contexts import context_labels, selling_packages

CONTEXTS = context_labels()
SELLING = sorted(selling_packages().items())  # [(label, package), ...]
SHARED_KERNEL = {"auth"}  # the customer (auth.User) is the one thing every context may point at
REPO = Path(__file__).resolve().parents[2]


def cross_context_relations() -> list[str]:
    found = []
    for model in apps.get_models():
        source = model._meta.app_label
        if source not in CONTEXTS:
            continue
        for field in model._meta.get_fields():
            if not field.is_relation or field.related_model is None or field.auto_created:
                continue
            target = field.related_model._meta.app_label
            if target != source and target not in SHARED_KERNEL:
                found.append(f"{model.__name__}.{field.name} -> {target}")
    return found


def test_no_model_of_a_context_relates_to_another_context():
    assert cross_context_relations() == []


def test_the_relation_check_catches_a_string_foreign_key(settings):
    from django.db import models

    class Intruder(models.Model):  # noqa: DJ008
        wallet = models.ForeignKey("billing.Wallet", on_delete=models.PROTECT)

        class Meta:
            app_label = SELLING[0][0]

    try:
        assert "Intruder.wallet -> billing" in cross_context_relations()
    finally:
        del apps.all_models[SELLING[0][0]]["intruder"]
        apps.clear_cache()


def run_lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_import_linter_keeps_the_boundaries_of_the_tree():
    result = run_lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line"),
    [
        (f"{SELLING[0][1].replace('.', '/')}/intruder.py", "from iaas.billing import models"),
        (f"{SELLING[1][1].replace('.', '/')}/intruder.py", f"import {SELLING[0][1]}"),
        ("iaas/contracts/intruder.py", "from iaas.billing import apps"),
    ],
)
def test_import_linter_fails_on_a_forbidden_import(tmp_path, module, line):
    copy = tmp_path / "tree"
    copy.mkdir()
    subprocess.run(["cp", "-r", str(REPO / "iaas"), str(REPO / ".importlinter"), str(copy)], check=True)
    (copy / module).write_text(textwrap.dedent(line) + "\n")
    result = run_lint_imports(copy)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


def test_import_linter_holds_every_registered_selling_context():
    """.importlinter names the contexts (it reads no registry): a context registered at
    start-up and missing from a contract would be left unguarded."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    for contract, key in [
        ("importlinter:contract:contexts-independent", "modules"),
        ("importlinter:contract:contracts-import-no-context", "forbidden_modules"),
        ("importlinter:contract:shared-libraries-know-no-context", "forbidden_modules"),
        ("importlinter:contract:reconciliation-through-contracts", "forbidden_modules"),
    ]:
        listed = set(config[contract][key].split())
        missing = sorted(package for _, package in SELLING if package not in listed)
        assert missing == [], f"{contract} does not name {missing}"
