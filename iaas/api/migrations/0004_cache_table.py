"""The database cache's table, where the throttles count when no REDIS_URL is set (the
embedded SQLite default, or PostgreSQL alone). Created by ``migrate`` through
``createcachetable``'s own code, so no deployment needs an extra command; created
whatever cache is configured now, so turning Redis off later needs nothing either."""

from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import migrations

TABLE = "iaas_cache"  # settings.IAAS_CACHE_TABLE


def create_cache_table(apps, schema_editor):
    command = CreateCacheTable()
    command.verbosity = 0
    command.create_table(schema_editor.connection.alias, TABLE, dry_run=False)


def drop_cache_table(apps, schema_editor):
    schema_editor.execute(f"DROP TABLE IF EXISTS {schema_editor.quote_name(TABLE)}")


class Migration(migrations.Migration):
    dependencies = [("api", "0003_carry_over_authtokens")]

    operations = [migrations.RunPython(create_cache_table, drop_cache_table, elidable=False)]
