"""Strict serializer fields: JSON types are checked, never coerced.

REST framework's IntegerField takes ``"10"`` and ``10.0``, its CharField takes ``10``
and its UUIDField takes an integer; money and ids must not be guessed at.
"""

from __future__ import annotations

import re

from django.core.validators import RegexValidator
from rest_framework import serializers
from rest_framework.fields import flatten_choices_dict, to_choices_dict


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: a string, a float (even ``10.0``) or a boolean is invalid."""

    default_error_messages = {
        "invalid": "A JSON integer is required (not a string, a float or a boolean).",
    }

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("invalid")
        return data


class StrictCharField(serializers.CharField):
    """A JSON string only."""

    default_error_messages = {"invalid": "A JSON string is required."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)  # " x" is not "x": reject, never guess
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    """One of the choices, given as a JSON string (case-sensitive)."""

    default_error_messages = {"invalid_choice": '"{input}" is not one of the accepted values.'}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class CatalogChoiceField(StrictChoiceField):
    """An id out of a catalog (an offered plan's), given as a JSON string. Its choices are
    read from ``catalog`` (a selector of the offered rows) only when they are shown (the
    OpenAPI schema): a request is not checked against them here but by the statement that
    sells from the catalog, which reads the row as it is at that instant. So a purchase
    costs no catalog read of its own, and the view answers an id that statement did not
    find as this field's error (``invalid_choice``)."""

    def __init__(self, *, catalog, **kwargs) -> None:
        self.catalog = catalog
        self._read = False
        super().__init__(choices=[], **kwargs)

    def _get_choices(self):
        if not self._read:
            self._read = True
            self._set_choices(list(self.catalog().values_list("id", flat=True)))
        return self._choices

    def _set_choices(self, choices):
        # As ChoiceField's, without reading ``self.choices`` back (which would read the
        # catalog on every request).
        self.grouped_choices = to_choices_dict(choices)
        self._choices = flatten_choices_dict(self.grouped_choices)
        self.choice_strings_to_values = {str(key): key for key in self._choices}

    choices = property(_get_choices, _set_choices)

    def to_internal_value(self, data):
        if not isinstance(data, str) or not data:
            self.fail("invalid_choice", input=data)
        return data

    def not_offered(self, value) -> serializers.ValidationError:
        """The error for an id the catalog does not offer, keyed by this field's name."""
        return serializers.ValidationError(
            {self.field_name: [self.error_messages["invalid_choice"].format(input=value)]}
        )


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a JSON string."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


# A hostname label (RFC 1123): letters, digits and hyphens, 1 to 63, no hyphen at either end.
LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_LABEL_PATTERN = rf"\A{LABEL}\Z"
# A fully qualified domain name: two labels or more, the last (the TLD) starting with a
# letter, so an IP address is never taken for a domain. At most 253 characters (checked
# separately: a look-ahead would not survive every regex engine a client uses). \A and
# \Z, not ^ and $: Python's $ also matches before a trailing newline.
DOMAIN_PATTERN = rf"\A(?:{LABEL}\.)+[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\Z"
DOMAIN_MAX_LENGTH = 253


class HostnameLabelField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 63)
        kwargs.setdefault("min_length", 1)
        super().__init__(**kwargs)
        self.validators.append(
            RegexValidator(
                re.compile(HOSTNAME_LABEL_PATTERN),
                message=(
                    "A name is 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen."
                ),
            )
        )


class DomainNameField(StrictCharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", DOMAIN_MAX_LENGTH)
        super().__init__(**kwargs)
        self.validators.append(
            RegexValidator(
                re.compile(DOMAIN_PATTERN),
                message=(
                    "A domain is a fully qualified name of two labels or more, each 1 to 63 letters, "
                    "digits and hyphens, not starting or ending with a hyphen."
                ),
            )
        )

    def to_internal_value(self, data):
        return super().to_internal_value(data).lower()
