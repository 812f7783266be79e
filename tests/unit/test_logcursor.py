"""LogCursor: each line once, in order; a missed line is reported as a gap, never skipped silently."""

from __future__ import annotations

from client.logcursor import LogCursor


def line(n: int) -> list[object]:
    return [n, 1, "stdout", f"line {n}", 0.0]


def test_live_lines_in_order_once_and_gaps_reported() -> None:
    c = LogCursor()
    assert c.live("a", [line(0), line(1)]) == ([line(0), line(1)], False)
    assert c.live("a", [line(1), line(2)]) == ([line(2)], False)  # a repeat is not yielded twice
    assert c.live("a", [line(5)]) == ([], True)  # 3 and 4 were missed: fetch them
    assert c.at("a") == 3
    assert c.fetched("a", [line(2), line(3), line(4)]) == [line(3), line(4)]
    assert c.live("a", [line(5)]) == ([line(5)], False)
    assert c.at("b") == 0 and c.live("b", []) == ([], False)


def test_backlog_pages_move_the_cursor_to_the_page_end() -> None:
    c = LogCursor()
    assert c.backlog("a", {"lines": [line(0), line(1)], "next": 2}) == [line(0), line(1)]
    assert c.at("a") == 2
    c.backlog("a", {"lines": [], "next": 1})  # an older page never moves it back
    assert c.at("a") == 2
