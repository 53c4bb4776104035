"""Services started from one process never share an HTTP port, even when the kernel offers one twice."""

from __future__ import annotations

from distillery_cli import stack


def test_a_port_offered_twice_is_handed_out_once(monkeypatch) -> None:
    offers = iter([41001, 41001, 41002])
    monkeypatch.setattr(stack, "free_port", lambda: next(offers))
    monkeypatch.setattr(stack, "_HANDED_OUT", set())
    assert [stack.service_port(), stack.service_port()] == [41001, 41002]
