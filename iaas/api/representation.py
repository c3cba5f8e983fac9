"""The JSON a resource has in the API, for messages sent outside a request (webhook
bodies, emails): exactly what the serializer renders, as plain JSON data, so that an
event can carry it through the outbox and a customer sees the same object in a webhook
as in a GET."""

from __future__ import annotations

import json

from rest_framework.renderers import JSONRenderer
from rest_framework.serializers import BaseSerializer


def as_shown(serializer_class: type[BaseSerializer], instance, **context) -> dict:
    """``instance`` as ``serializer_class`` renders it in an answer: ids and moments as
    the strings the API prints, money as integers. ``context`` is the serializer's
    (no request: nothing here may depend on one)."""
    data = serializer_class(instance, context=context).data
    return json.loads(JSONRenderer().render(data))
