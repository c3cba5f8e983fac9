"""One id follows a request: the proxy's X-Request-ID kept when it is usable (else a new
one), echoed on the response, on every log line written while the request is served,
and carried by the tasks it publishes into the worker that runs them."""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace
from unittest import mock

import pytest

from iaas.celery import app
from iaas.common import request_ids, task_request_ids
from iaas.common.logs import RequestIdFilter

pytestmark = pytest.mark.django_db

GIVEN = "proxy-7f3a9c01:req"
NEW_ID = re.compile(r"[0-9a-f]{32}")


# --- Over HTTP --------------------------------------------------------------------------------


def test_a_usable_request_id_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=GIVEN)
    assert response.status_code == 200
    assert response["X-Request-ID"] == GIVEN


@pytest.mark.parametrize(
    "given", [None, "", "short", "x" * 65, "has space", "line\nbreak", "ünïcode-id", "a/b/c/d/e"]
)
def test_an_unusable_or_missing_request_id_is_replaced_by_a_new_one(client, given):
    headers = {} if given is None else {"HTTP_X_REQUEST_ID": given}
    response = client.get("/healthz", **headers)
    assert NEW_ID.fullmatch(response["X-Request-ID"])
    assert response["X-Request-ID"] != given


def test_each_request_gets_its_own_id(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.fixture
def console():
    """What the project's console handler (LOGGING's, with its request id filter) writes
    while the test runs."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if any(isinstance(each, RequestIdFilter) for each in handler.filters)
    ]
    assert handlers, "LOGGING gives the root logger no handler with the request id filter"
    written = io.StringIO()
    previous = [handler.setStream(written) for handler in handlers]
    yield written
    for handler, stream in zip(handlers, previous, strict=True):
        handler.setStream(stream)


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/no-such-page", "Not Found: /no-such-page"),  # logged inside the middleware
        ("/metrics", "Unauthorized: /metrics"),  # logged by Django after the middleware returned
    ],
)
def test_a_log_line_written_for_the_request_carries_its_id(client, settings, console, path, line):
    settings.IAAS_METRICS_TOKEN = "a-token-nobody-sends"
    client.get(path, HTTP_X_REQUEST_ID=GIVEN)
    written = [each for each in console.getvalue().splitlines() if line in each]
    assert written, console.getvalue()
    assert f"[{GIVEN}]" in written[0]


def test_outside_a_request_a_log_line_says_so():
    record = logging.LogRecord("iaas.test", logging.INFO, __file__, 1, "hello", None, None)
    RequestIdFilter(missing="-").filter(record)
    assert record.request_id == "-"
    with request_ids.bound(GIVEN):
        RequestIdFilter().filter(record)
    assert record.request_id == GIVEN


# --- Across the task engine --------------------------------------------------------------------


def test_a_task_published_during_a_request_carries_its_id():
    headers = {"id": "task-1"}
    with request_ids.bound(GIVEN):
        task_request_ids.put_request_id(sender="iaas.jobs.start", headers=headers)
    assert headers["request_id"] == GIVEN


def test_a_task_published_outside_any_request_carries_none():
    headers = {"id": "task-1"}
    task_request_ids.put_request_id(sender="iaas.jobs.start", headers=headers)
    assert "request_id" not in headers


def test_a_task_republished_keeps_the_id_it_carries():
    headers = {"id": "task-1", "request_id": "original-request-1"}
    with request_ids.bound(GIVEN):
        task_request_ids.put_request_id(sender="iaas.jobs.part", headers=headers)
    assert headers["request_id"] == "original-request-1"


def run_task_signals(carried, task_id: str = "c0ffee00-task") -> tuple[str, str]:
    """The id current while the task runs (between prerun and postrun), and after."""
    task = SimpleNamespace(request=SimpleNamespace(request_id=carried))
    task_request_ids.bind_request_id(sender=task, task_id=task_id, task=task)
    during = request_ids.current()
    task_request_ids.unbind_request_id(sender=task, task_id=task_id, task=task)
    return during, request_ids.current()


def test_a_worker_runs_a_task_under_the_id_it_carries():
    assert run_task_signals(GIVEN) == (GIVEN, "")


@pytest.mark.parametrize("carried", [None, "", "not a usable id"])
def test_a_task_without_a_usable_id_runs_under_its_own_task_id(carried):
    assert run_task_signals(carried, task_id="c0ffee00-task") == ("c0ffee00-task", "")


def test_a_task_run_where_an_id_is_current_keeps_it():
    """A task applied in the process that calls it (no message): the caller's id."""
    with request_ids.bound(GIVEN):
        during, after = run_task_signals(None)
    assert (during, after) == (GIVEN, GIVEN)


@pytest.fixture
def connected():
    task_request_ids.connect(app)
    task_request_ids.connect(app)  # twice is once (dispatch ids)


@pytest.fixture
def echo_task():
    """A task that reports the id current while it runs."""
    seen = []

    @app.task(name="tests.request_id_echo", bind=True, shared=False)
    def echo(self):
        seen.append(request_ids.current())

    yield echo, seen
    app.tasks.pop("tests.request_id_echo", None)


def published(task_name: str, **options) -> tuple[tuple, dict]:
    """(body, headers) of the message ``send_task`` would put on the wire, taken from a
    mocked producer: no broker involved."""
    producer = mock.MagicMock()
    app.send_task(task_name, producer=producer, queue=app.conf.task_default_queue, **options)
    assert producer.publish.call_count == 1
    call = producer.publish.call_args
    return call.args[0], call.kwargs["headers"]


def test_send_task_puts_the_current_id_in_the_message_headers(connected):
    with request_ids.bound(GIVEN):
        _, headers = published("iaas.jobs.start", kwargs={"job": "meter"})
    assert headers["request_id"] == GIVEN
    _, headers = published("iaas.jobs.start", kwargs={"job": "meter"})
    assert "request_id" not in headers


def test_the_worker_runs_the_published_message_under_its_id(connected, echo_task):
    """The message as published, run by the worker's own request path (celery.worker's
    Request, as a worker builds it from a delivered message): no broker, no eager mode."""
    from celery.worker.request import Request

    echo, seen = echo_task
    with request_ids.bound(GIVEN):
        body, headers = published(echo.name)
    assert request_ids.current() == ""
    message = mock.MagicMock(headers=headers)
    Request(message, app=app, body=body, headers=headers, decoded=True).execute()

    body, headers = published(echo.name, task_id="beat-started-1")  # published with no id current
    Request(mock.MagicMock(headers=headers), app=app, body=body, headers=headers, decoded=True).execute()

    assert seen == [GIVEN, "beat-started-1"]
    assert request_ids.current() == ""
