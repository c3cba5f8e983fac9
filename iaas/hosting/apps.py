# The module, not the class: Django picks an app's config among the AppConfig classes
# its apps.py holds, and the kit's base must not be one of them.
from iaas.spending import apps as kit


class HostingConfig(kit.SellingContextConfig):
    name = "iaas.hosting"
    label = "hosting"
    verbose_name = "Hosting"
    service_pages = (("subscription", "subscriptions"),)
    # What its subscriptions' events tell, and their grace (the warning before one ends).
    sold = "spending.subscriptions"
