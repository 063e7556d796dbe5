"""Log formats: the task context reaches every record, in JSON and in text."""

import json
import logging

import pytest

from core.logging import JsonFormatter, TaskContextFilter, TextFormatter, bind_task_context, clear_task_context


@pytest.fixture
def record() -> logging.LogRecord:
    return logging.LogRecord("orders.services", logging.WARNING, __file__, 1, "Charging %s", ("EUR 10.00",), None)


def formatted(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    TaskContextFilter().filter(record)
    return formatter.format(record)


def test_inside_a_task_json_lines_carry_the_task_and_its_order(record):
    bind_task_context(task_id="t-1", task_name="orders.process_order", order_id="o-1")
    try:
        entry = json.loads(formatted(JsonFormatter(), record))
    finally:
        clear_task_context()

    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "WARNING",
        "logger": "orders.services",
        "message": "Charging EUR 10.00",
        "task_id": "t-1",
        "task_name": "orders.process_order",
        "order_id": "o-1",
    }


def test_outside_a_task_there_is_no_task_context(record):
    entry = json.loads(formatted(JsonFormatter(), record))

    assert set(entry) == {"time", "level", "logger", "message"}
    assert formatted(TextFormatter(), record).endswith(" WARNING orders.services Charging EUR 10.00")


def test_text_lines_name_the_task_and_order_at_the_end(record):
    bind_task_context(task_id="t-1", task_name="orders.process_order", order_id=None)
    try:
        line = formatted(TextFormatter(), record)
    finally:
        clear_task_context()

    assert line.endswith(" WARNING orders.services Charging EUR 10.00 [orders.process_order t-1 order=None]")
