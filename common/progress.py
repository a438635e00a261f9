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


_MAGIC = 0x4B43_4153_4C53_4C31  # "1LSLSACK"
_FIRST = 8


class ProgressBoard:
    def __init__(self, *, inputs: int, outputs: int) -> None:
        self.inputs = inputs
        self.outputs = outputs
        from common.shmqueue import _backend  # the platform's shared memory, chosen there

        segment_cls, _signal = _backend()
        self._segment = segment_cls(
            name="log-shuttle.progress", size=8 * (_FIRST + inputs + inputs * outputs))
        self._words = memoryview(self._segment.mm).cast("Q")
        self._words[0], self._words[1], self._words[2] = _MAGIC, inputs, outputs

    @classmethod
    def create(cls, *, inputs: int, outputs: int) -> ProgressBoard:
        """Supervisor only, before forking."""
        return cls(inputs=inputs, outputs=outputs)

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
            self._segment.close()


class InputProgress:
    """The board as input ``index`` sees it."""

    def __init__(self, board: ProgressBoard, index: int) -> None:
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
