"""The history of what operators and batch runs change (catalog prices, wallet status,
suspensions, group membership): who, when, before and after, append-only.

A shared library like ``iaas.common``: every context may import it, it imports none of
them. Write through ``iaas.audit.services`` (its docstring is the how-to); show an
object's history on its admin page with ``iaas.audit.admin.ChangeHistoryAdmin``.
"""
