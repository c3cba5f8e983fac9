"""Filters for lists: a filter given with an empty value is a 400, as any other value
that does not parse (django-filter would silently ignore it)."""

from __future__ import annotations

import django_filters


class StrictFilterSet(django_filters.FilterSet):
    def parameter_names(self) -> dict[str, str]:
        """Query parameter -> form field, range filters' ``_after``/``_before`` included."""
        names = {}
        for name, filter_ in self.filters.items():
            names[name] = name
            for suffix in getattr(filter_.field.widget, "suffixes", []) or []:
                if suffix:
                    names[f"{name}_{suffix}"] = name
        return names

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for parameter, field in self.parameter_names().items():
            if parameter in self.data and any(value == "" for value in self.data.getlist(parameter)):
                self.form.add_error(field if field in self.form.fields else None, f"{parameter} is empty.")
                valid = False
        return valid
