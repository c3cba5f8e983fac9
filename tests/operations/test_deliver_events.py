"""deliver_events: delivers what is pending; --loop runs as a worker and stops cleanly
on SIGTERM (the row being delivered finishes, the summary is printed, exit 0)."""

from __future__ import annotations

import os
import signal
import threading
from io import StringIO

from django.core.management import call_command

from iaas.contracts.models import OutboxMessage


def test_delivers_pending_events_once(three_wallets, buy_server):
    buy_server(three_wallets[0])
    out = StringIO()
    call_command("deliver_events", stdout=out)
    # The purchase's ChargesRecorded, then Billing's ChargeSettled to Cloud alone (the
    # context whose charge it settled).
    assert out.getvalue().strip() == "delivered 2, failed 0, still pending 0"
    assert not OutboxMessage.objects.exclude(status="done").exists()


def test_loop_stops_cleanly_on_sigterm(three_wallets, buy_server):
    buy_server(three_wallets[0])
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    out = StringIO()
    try:
        call_command("deliver_events", "--loop", "--interval", "0.05", "--json", stdout=out)
    finally:
        timer.cancel()
    assert out.getvalue().strip() == '{"delivered": 2, "failed": 0, "pending": 0}'
    assert signal.getsignal(signal.SIGTERM) is before  # the worker's handler is gone
