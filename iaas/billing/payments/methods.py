"""Saved payment methods (being written: see the helper's task)."""

from __future__ import annotations

from typing import Any


def setup_succeeded(setup_intent: dict[str, Any]) -> str:
    raise NotImplementedError


def setup_failed(setup_intent: dict[str, Any]) -> str:
    raise NotImplementedError


def setup_canceled(setup_intent: dict[str, Any]) -> str:
    raise NotImplementedError
