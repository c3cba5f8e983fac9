# The module, not the class: Django picks an app's config among the AppConfig classes
# its apps.py holds, and the kit's base must not be one of them.
from iaas.spending import apps as kit


class StorageConfig(kit.SellingContextConfig):
    name = "iaas.storage"
    label = "storage"
    verbose_name = "Storage"
    metered = "spending.volumes"
    service_pages = (("volume", "volumes"),)
