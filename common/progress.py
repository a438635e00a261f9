"""Acknowledgements from the outputs back to the inputs, through a small board in shared memory.

No message flows back. Each input numbers the messages it sends (``seq``, 1, 2, ...); the
pipeline stamps every batch it builds with, per input, the highest input ``seq`` it has handed on
so far; each output, once its destination has a batch, raises its own slot for each input to
that stamp. An input's messages up to ``seq`` S are acknowledged by every output when every
output's slot for that input is at least S: the input reads the minimum whenever it likes and
advances its checkpoints to the positions it recorded for S.

Every word has exactly one writer (an input writes its ``sent`` word, an output its slots), all
values only grow, and each is one aligned 8-byte store, so no lock is needed and a process killed
at any instant leaves the board consistent. The board outlives child restarts (the supervisor
made it before forking): a restarted input continues numbering after ``sent``.

Layout, in u64 words: [magic, inputs, outputs, 0 ...] then ``sent[i]`` at 8 + i, then
``delivered[o][i]`` at 8 + inputs + o * inputs + i.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


_MAGIC = 0x4B43_4153_4C53_4C31  # "1LSLSACK"
_FIRST = 8


class ProgressBoard:
    """The board in shared memory. The supervisor makes it (:meth:`create`) before forking; a
    child that cannot inherit it (Windows) opens the same memory by name and :meth:`attach`es."""

    def __init__(self, segment: Any, *, inputs: int, outputs: int) -> None:
        # Private: use create() or attach().
        self.inputs = inputs
        self.outputs = outputs
        self.segment = segment
        """The shared memory (``mm``; on Windows also ``tag`` and ``size``, its name)."""
        self._words: memoryview | None = memoryview(segment.mm).cast("Q")

    @staticmethod
    def size(*, inputs: int, outputs: int) -> int:
        return 8 * (_FIRST + inputs + inputs * outputs)

    @classmethod
    def create(cls, *, inputs: int, outputs: int) -> ProgressBoard:
        """Supervisor only, before forking: a new board, every word zero."""
        from common.shmqueue import _backend  # the platform's shared memory, chosen there

        segment_cls, _signal = _backend()
        segment = segment_cls(name="log-shuttle.progress",
                              size=cls.size(inputs=inputs, outputs=outputs))
        board = cls(segment, inputs=inputs, outputs=outputs)
        board._words[0], board._words[1], board._words[2] = _MAGIC, inputs, outputs
        return board

    @classmethod
    def attach(cls, segment: Any, *, inputs: int, outputs: int) -> ProgressBoard:
        """The board the supervisor made, in a process that opened its memory by name."""
        board = cls(segment, inputs=inputs, outputs=outputs)
        header = tuple(board._words[0:3])
        if header != (_MAGIC, inputs, outputs):
            board.destroy()
            raise ValueError(f"not a progress board of {inputs} inputs and {outputs} outputs "
                             f"(header {header})")
        return board

    def input(self, index: int) -> InputProgress:
        if not 0 <= index < self.inputs:
            raise IndexError(f"input {index} of {self.inputs}")
        return InputProgress(self, index)

    def output(self, index: int) -> OutputProgress:
        if not 0 <= index < self.outputs:
            raise IndexError(f"output {index} of {self.outputs}")
        return OutputProgress(self, index)

    def destroy(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
            self.segment.close()


class InputProgress:
    """The board as input ``index`` sees it."""

    def __init__(self, board: ProgressBoard, index: int) -> None:
        self.board, self.index = board, index
        self._words = board._words
        self._sent = _FIRST + index
        first = _FIRST + board.inputs + index
        self._slots = range(first, first + board.inputs * board.outputs, board.inputs)

    def next_seq(self) -> int:
        """Number the next message (numbers go on after a restart)."""
        seq = self._words[self._sent] + 1
        self._words[self._sent] = seq
        return seq

    def acked(self) -> int:
        """The highest seq that every output has delivered (with no outputs, every seq sent)."""
        words = self._words
        return min((words[s] for s in self._slots), default=words[self._sent])


class OutputProgress:
    """The board as output ``index`` sees it."""

    def __init__(self, board: ProgressBoard, index: int) -> None:
        self.board, self.index = board, index
        self._words = board._words
        self._inputs = board.inputs
        self._base = _FIRST + board.inputs + index * board.inputs

    def delivered(self, acks: Iterable[tuple[int, int]]) -> None:
        """The destination has everything up to these (input, seq) stamps."""
        words = self._words
        for i, seq in acks:
            if 0 <= i < self._inputs:
                slot = self._base + i
                if seq > words[slot]:
                    words[slot] = seq
