"""gunicorn configuration for bench/faults.py: inject a failing event handler.

While the file named by ``BENCH_FAULT_FLAG`` exists, every Billing event handler in the
server's workers raises before doing anything (the settlement service is down); once
the file is gone they work again. Nothing in the app changes: the hook wraps the
handlers the bus registered, after the worker loaded the app.
"""

import os

FLAG = os.environ.get("BENCH_FAULT_FLAG", "")


def _failing(handler):
    def wrapper(event):
        if FLAG and os.path.exists(FLAG):
            raise ConnectionError("injected fault: Billing's event handlers are down")
        return handler(event)

    return wrapper


def post_worker_init(worker):
    if not FLAG:
        return
    from iaas.contracts import bus

    for name, handler in list(bus._handlers_by_name.items()):
        if name.startswith("iaas.billing."):
            bus._handlers_by_name[name] = _failing(handler)
