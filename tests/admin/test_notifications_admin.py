"""What operators see of customers' notifications: an email as it went out, but never a
live verification link; "Send again" gives an email fresh attempts and leaves one a
sender is sending alone; a delivery's page shows its attempts."""

from __future__ import annotations

import datetime as dt
import uuid

from django.urls import reverse
from django.utils import timezone

from iaas.notifications import emails
from iaas.notifications.models import OutgoingEmail


def test_staff_see_an_email_without_its_verification_link(as_role, alice):
    emails.settings_for(alice.pk)
    emails.verification_resend(owner_id=alice.pk)
    email = OutgoingEmail.objects.get(kind="verify_email")
    token = email.text.split("/email/verify/")[1].split("/")[0]
    assert len(token) > 20
    page = as_role("support").get(reverse("admin:notifications_outgoingemail_change", args=[email.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert token not in html
    assert "/email/verify/[link hidden]/" in html


def test_send_again_gives_fresh_attempts_but_never_takes_a_live_claim(as_role, alice):
    def email(**fields):
        return OutgoingEmail.objects.create(
            owner=alice, kind="low_balance", event_id=uuid.uuid4(), to="a@example.com", subject="s", text="t",
            html="h", status="failed", attempts=8, last_error="550", **fields,
        )  # fmt: skip

    given_up = email()
    being_sent = email(claimed_until=timezone.now() + dt.timedelta(minutes=1))
    client = as_role("superuser")
    changelist = reverse("admin:notifications_outgoingemail_changelist")
    page = client.get(changelist)
    token = page.context["action_form"]["operation_token"].value()
    client.post(
        changelist,
        {"action": "send_again", "_selected_action": [given_up.pk, being_sent.pk], "operation_token": token},
    )
    given_up.refresh_from_db()
    being_sent.refresh_from_db()
    assert (given_up.status, given_up.attempts, given_up.last_error) == ("pending", 0, "")
    assert (being_sent.status, being_sent.attempts) == ("failed", 8)
