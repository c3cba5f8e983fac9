# The module, not the class: Django picks an app's config among the AppConfig classes
# its apps.py holds, and the kit's base must not be one of them.
from iaas.spending import apps as kit


class CloudConfig(kit.SellingContextConfig):
    name = "iaas.cloud"
    label = "cloud"
    verbose_name = "Cloud"
    # Metered: reconciliation holds each server's usage records against it (I11).
    metered = "spending.servers"
    service_pages = (("server", "servers"),)
