"""PromptGrid: the same send-and-receive contract as Flower's grids, polled promptly."""


import pytest
from flwr.app import Message, Metadata, RecordDict
from flwr.serverapp import Grid

from server.grid import PromptGrid


class SlowNodes(Grid):
    """A grid whose node ``i`` replies on the ``i``-th pull (``None``: never)."""

    def __init__(self, reply_on: dict[str, int | None]) -> None:
        self.reply_on, self.pulls, self.pushed = reply_on, 0, []

    def set_run(self, run):
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def get_node_ids(self):
        return [1, 2, 3]

    def push_messages(self, messages):
        self.pushed += list(messages)
        return list(self.reply_on)

    def send_and_receive(self, messages, *, timeout=None):
        raise AssertionError("PromptGrid must not use the inner grid's 3 s loop")

    def pull_messages(self, message_ids):
        self.pulls += 1
        out = []
        for mid in message_ids:
            due = self.reply_on[mid]
            if due is not None and due <= self.pulls:
                meta = Metadata(run_id=1, message_id="", src_node_id=0, dst_node_id=0,
                                reply_to_message_id=mid, group_id="", created_at=0.0,
                                ttl=60.0, message_type="train")
                out.append(Message(RecordDict(), metadata=meta))
        return out


def test_every_reply_is_collected_once_and_polling_stops():
    inner = SlowNodes({"a": 1, "b": 3, "c": 5})
    replies = PromptGrid(inner, interval=0.001).send_and_receive([], timeout=None)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b", "c"]
    assert inner.pulls == 5  # no pull after the last reply


def test_a_silent_node_is_absent_after_the_timeout(monkeypatch):
    import server.grid as grid_module

    clock = Clock()  # the grid's own clock: the test asserts when it gave up, not how fast
    monkeypatch.setattr(grid_module.time, "sleep", clock.sleep)
    monkeypatch.setattr(grid_module.time, "monotonic", clock.monotonic)
    inner = SlowNodes({"a": 1, "b": None})
    replies = PromptGrid(inner, interval=0.01).send_and_receive([], timeout=0.2)
    assert [r.metadata.reply_to_message_id for r in replies] == ["a"]
    # it waited the whole timeout for "b", polling all along, and not a poll longer
    assert 0.2 <= clock.now < 0.2 + 0.01 + 1e-9 and inner.pulls > 2


def test_the_rest_is_delegated_and_a_bad_interval_is_refused():
    inner = SlowNodes({})
    grid = PromptGrid(inner)
    assert list(grid.get_node_ids()) == [1, 2, 3]
    grid.set_run("run")
    assert grid.run == "run"
    with pytest.raises(ValueError, match="interval must be > 0"):
        PromptGrid(inner, interval=0)


class Clock:
    """``time.sleep`` and ``time.monotonic`` on a clock that only the sleeps move."""

    def __init__(self):
        self.now, self.waits = 0.0, []

    def sleep(self, s):
        self.waits.append(s)
        self.now += s

    def monotonic(self):
        return self.now


def test_polling_starts_fast_backs_off_to_the_interval_and_restarts_on_a_reply(monkeypatch):
    import server.grid as grid_module

    clock = Clock()
    monkeypatch.setattr(grid_module.time, "sleep", clock.sleep)
    monkeypatch.setattr(grid_module.time, "monotonic", clock.monotonic)
    inner = SlowNodes({"a": 3, "b": 20})
    replies = PromptGrid(inner, interval=0.1, first=0.005).send_and_receive([], timeout=None)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["a", "b"]
    waits = clock.waits
    assert waits[0] == 0.005 and waits[1] == pytest.approx(0.0075)  # no reply yet: 1.5x
    assert waits[2] == 0.005  # "a" arrived on the 3rd pull: back to the first wait
    assert max(waits) == pytest.approx(0.1) and waits[-1] == pytest.approx(0.1)  # capped
    assert len(waits) == 19  # one wait between consecutive pulls, none after the last


def test_a_first_wait_above_the_interval_is_refused():
    with pytest.raises(ValueError, match=r"first must be in \(0, interval=0.1\]"):
        PromptGrid(SlowNodes({}), interval=0.1, first=0.5)
