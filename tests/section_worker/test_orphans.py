"""The worker's book of orphaned jobs: which dispatch may resume an orphan, and its bounds."""

from __future__ import annotations

from section_worker.orphans import Orphan, Orphans


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _keep(book: Orphans, job_id: str = "j", message_id: str = "m1", resumed_from: str = "") -> None:
    book.keep(job_id, conv_id="c1", message_id=message_id, asset_id="a1", resumed_from=resumed_from)


def test_a_dispatch_knowing_no_message_takes_the_orphan_once() -> None:
    clock = FakeClock()
    book = Orphans(clock=clock.monotonic)
    _keep(book)

    assert book.take("other-job", "") is None
    assert book.take("j", "") == Orphan("c1", "m1", "a1", "", kept_at=clock.now)
    assert book.take("j", "") is None
    assert len(book) == 0


def test_a_dispatch_knowing_the_orphans_message_or_where_it_came_from_takes_it() -> None:
    book = Orphans()
    _keep(book, message_id="m2", resumed_from="m1")
    taken = book.take("j", "m1")
    assert taken is not None and taken.message_id == "m2"

    _keep(book, message_id="m2", resumed_from="m1")
    taken = book.take("j", "m2")
    assert taken is not None and taken.message_id == "m2"


def test_a_dispatch_that_got_further_elsewhere_drops_the_orphan() -> None:
    book = Orphans()
    _keep(book, message_id="m1")

    assert book.take("j", "m3") is None
    assert book.take("j", "") is None  # dropped, not kept for later


def test_an_orphan_lives_ttl_seconds() -> None:
    clock = FakeClock()
    book = Orphans(ttl_s=60, clock=clock.monotonic)
    _keep(book, "old")
    clock.advance(30)
    _keep(book, "young")
    clock.advance(31)

    assert len(book) == 1
    assert book.take("old", "") is None
    assert book.take("young", "") is not None


def test_beyond_its_size_the_oldest_orphans_go_first() -> None:
    book = Orphans(max_entries=2)
    for job_id in ("a", "b", "c"):
        _keep(book, job_id)
    _keep(book, "b")  # kept again: the youngest now
    _keep(book, "d")

    assert len(book) == 2
    assert [job_id for job_id in "abcd" if book.take(job_id, "")] == ["b", "d"]
