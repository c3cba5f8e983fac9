"""Carries REST framework's plain-text tokens (``authtoken_token``) over as hashed API
keys, so that no customer is locked out, then drops that table: a plain-text copy of
every customer's credential is what API keys exist to get rid of. The app
``rest_framework.authtoken`` is no longer installed, so its rows in django_migrations
go too (were it installed again, it would start from an empty table).

Written without the app's code (a migration must keep working as that code changes):
the digest and the visible prefix are those of ``iaas.api.keys``.
"""

import hashlib

from django.db import migrations

LEGACY_TABLE = "authtoken_token"
CARRIED_OVER_NAME = "token (carried over)"
VISIBLE_CHARACTERS = 6
BATCH = 1000


def carry_over_authtokens(apps, schema_editor):
    connection = schema_editor.connection
    if LEGACY_TABLE not in connection.introspection.table_names():
        return  # a database made after keys existed
    ApiKey = apps.get_model("api", "ApiKey")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {LEGACY_TABLE} ORDER BY created")  # noqa: S608
        while rows := cursor.fetchmany(BATCH):
            ApiKey.objects.using(connection.alias).bulk_create(
                ApiKey(
                    owner_id=user_id,
                    name=CARRIED_OVER_NAME,
                    prefix=key[:VISIBLE_CHARACTERS],
                    key_hash=hashlib.sha256(key.encode()).hexdigest(),
                    scope="read_write",
                    created_at=created,
                )
                for key, user_id, created in rows
            )
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {LEGACY_TABLE}")
        cursor.execute("DELETE FROM django_migrations WHERE app = %s", ["authtoken"])


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0002_api_key"),
    ]

    operations = [
        # Not reversible in effect: the plain-text tokens are gone; the keys stay usable.
        migrations.RunPython(carry_over_authtokens, migrations.RunPython.noop, elidable=False),
    ]
