"""The acknowledgement board (common/progress.py): real shared memory, and real processes where
the board crosses them (it is made before a fork, as the supervisor does)."""

from __future__ import annotations

import os
import signal

import pytest

from common.progress import ProgressBoard


@pytest.fixture
def board_of():
    made: list[ProgressBoard] = []

    def make(inputs: int, outputs: int) -> ProgressBoard:
        made.append(ProgressBoard.create(inputs=inputs, outputs=outputs))
        return made[-1]

    yield make
    for b in made:
        b.destroy()


def in_child(fn) -> int:
    """Run ``fn`` in a forked process; its exit code (negative: the signal that ended it)."""
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_an_input_numbers_its_messages_from_1(board_of):
    board = board_of(2, 1)
    a, b = board.input(0), board.input(1)
    assert [a.next_seq() for _ in range(3)] == [1, 2, 3]
    assert b.next_seq() == 1  # each input has its own numbers
    assert a.acked() == 0 and b.acked() == 0  # nothing delivered yet


def test_with_no_outputs_every_message_sent_counts_as_acknowledged(board_of):
    board = board_of(1, 0)
    inp = board.input(0)
    assert inp.acked() == 0
    inp.next_seq()
    inp.next_seq()
    assert inp.acked() == 2


def test_acknowledged_is_what_every_output_has_delivered(board_of):
    board = board_of(2, 3)
    inp0, inp1 = board.input(0), board.input(1)
    outs = [board.output(o) for o in range(3)]
    for _ in range(10):
        inp0.next_seq()
    outs[0].delivered([(0, 9)])
    outs[1].delivered([(0, 4)])
    assert inp0.acked() == 0  # the third output has nothing yet
    outs[2].delivered([(0, 7)])
    assert inp0.acked() == 4  # the slowest output
    outs[1].delivered([(0, 10)])
    assert inp0.acked() == 7
    assert inp1.acked() == 0  # stamps for input 0 say nothing of input 1


def test_a_batch_stamps_several_inputs_at_once(board_of):
    board = board_of(3, 1)
    board.output(0).delivered([(0, 5), (2, 8)])
    assert [board.input(i).acked() for i in range(3)] == [5, 0, 8]


def test_stamps_only_grow_so_a_late_or_replayed_batch_moves_nothing_back(board_of):
    board = board_of(1, 2)
    out = board.output(0)
    board.output(1).delivered([(0, 100)])
    out.delivered([(0, 6)])
    out.delivered([(0, 3)])  # an older batch, acknowledged after (or written again on restart)
    assert board.input(0).acked() == 6
    out.delivered([(0, 6)])
    assert board.input(0).acked() == 6


def test_stamps_of_an_unknown_input_are_ignored_and_indexes_are_checked(board_of):
    board = board_of(1, 1)
    board.output(0).delivered([(1, 50), (-1, 50), (0, 2)])
    assert board.input(0).acked() == 2
    with pytest.raises(IndexError):
        board.input(1)
    with pytest.raises(IndexError):
        board.output(1)
    with pytest.raises(IndexError):
        board.output(-1)


def test_a_restarted_input_goes_on_numbering_and_reads_what_was_acknowledged(board_of):
    board = board_of(1, 1)

    def first_life() -> None:
        inp = board.input(0)
        for _ in range(5):
            inp.next_seq()
        os.kill(os.getpid(), signal.SIGKILL)  # killed at once, as the OOM killer would

    assert in_child(first_life) == -signal.SIGKILL
    assert in_child(lambda: board.output(0).delivered([(0, 3)])) == 0
    restarted = board.input(0)  # a new view, as a restarted input makes one
    assert restarted.acked() == 3  # it resumes from the checkpoints of message 3
    assert restarted.next_seq() == 6  # never a number that was already used


def test_processes_write_their_own_words_without_a_lock(board_of):
    board = board_of(2, 2)
    n = 20_000

    def number(i: int):
        return lambda: [board.input(i).next_seq() for _ in range(n)]

    def deliver(o: int, last: int):
        return lambda: [board.output(o).delivered([(0, s), (1, s)]) for s in range(1, last + 1)]

    pids = []
    for fn in (number(0), number(1), deliver(0, n), deliver(1, n // 2)):
        pid = os.fork()
        if pid == 0:
            try:
                fn()
            finally:
                os._exit(0)
        pids.append(pid)
    assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids] == [0, 0, 0, 0]
    assert [board.input(i).acked() for i in (0, 1)] == [n // 2, n // 2]
    assert board.input(0).next_seq() == n + 1


def test_attach_checks_the_board_it_opens(board_of):
    board = board_of(2, 3)
    for o in range(3):
        board.output(o).delivered([(1, 4)])
    # What a Windows child does with the mapping it opened by name; here the same memory.
    class Same:
        mm = board.segment.mm

        def close(self) -> None:
            pass  # the board's own segment closes it

    again = ProgressBoard.attach(Same(), inputs=2, outputs=3)
    try:
        assert again.input(1).acked() == 4
        assert again.input(1).next_seq() == 1 and board.input(1).next_seq() == 2
    finally:
        again.destroy()
    with pytest.raises(ValueError, match="2 inputs and 2 outputs"):
        ProgressBoard.attach(Same(), inputs=2, outputs=2)
    assert ProgressBoard.size(inputs=2, outputs=3) == 8 * (8 + 2 + 6)
