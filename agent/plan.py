"""From a Config to the processes and queues the supervisor runs.

    input file ----q----\\                  /----q---- output stdout
    input file ----q-----> pipeline ------<
    (input ebpf) --q----/                  \\----q---- output tcp / grpc

Every arrow is its own single-producer single-consumer shared-memory queue. The registries below
map a component kind to the function that builds it: one explicit table per kind.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

import inputs.ebpf
import inputs.etw
import inputs.file
import outputs.stdout
import outputs.tcp
import pipeline
from agent.config import Config
from agent.supervisor import ChildSpec
from common.component import Context, Runner
from common.progress import ProgressBoard
from common.shmqueue import ShmQueue
from inputs.file.checkpoint import default_state_dir

INPUTS: dict[str, Callable[[Context], Runner]] = {
    "file": inputs.file.build, "ebpf": inputs.ebpf.build, "etw": inputs.etw.build}


def _grpc_output(ctx: Context) -> Runner:
    """Imported in the output's own process only: gRPC and protobuf stay out of the
    supervisor (no gRPC state exists before a fork) and out of agents that do not use them."""
    import outputs.grpc

    return outputs.grpc.build(ctx)


def _jetstream_output(ctx: Context) -> Runner:
    """Imported in the output's own process only (nats-py and its event loop)."""
    import outputs.jetstream

    return outputs.jetstream.build(ctx)


OUTPUTS: dict[str, Callable[[Context], Runner]] = {
    "stdout": outputs.stdout.build, "tcp": outputs.tcp.build, "grpc": _grpc_output,
    "jetstream": _jetstream_output}


def plan(config: Config) -> tuple[list[ChildSpec], list[ShmQueue | ProgressBoard]]:
    """Create the queues and the acknowledgement board (in this process, which must be the
    supervisor) and describe the children that use them. Input i is the pipeline's i-th queue
    and the board's input i; output o is the board's output o."""
    queues: list[ShmQueue | ProgressBoard] = []
    specs: list[ChildSpec] = []

    def queue(name: str, capacity: int) -> ShmQueue:
        q = ShmQueue.create(name=f"log-shuttle.{name}", capacity=capacity)
        queues.append(q)
        return q

    try:
        to_pipeline = []
        state_dir = config.agent.state_dir or default_state_dir()
        for cfg in config.inputs.file:
            cfg = msgspec.structs.replace(cfg, state_dir=cfg.state_dir or state_dir)
            q = queue(f"input-{cfg.name}", config.queue.input_bytes)
            to_pipeline.append(q)
            role = "input file" if cfg.name == "file" else f"input file {cfg.name}"
            specs.append(ChildSpec(role=role, kind="input", build=INPUTS["file"], config=cfg,
                                   produces=[q]))
        if config.inputs.ebpf is not None:
            q = queue("input-ebpf", config.queue.input_bytes)
            to_pipeline.append(q)
            specs.append(ChildSpec(role="input ebpf", kind="input", build=INPUTS["ebpf"],
                                   config=config.inputs.ebpf, produces=[q]))
        if config.inputs.etw is not None:  # Windows only (the configuration checks it)
            q = queue("input-etw", config.queue.input_bytes)
            to_pipeline.append(q)
            specs.append(ChildSpec(role="input etw", kind="input", build=INPUTS["etw"],
                                   config=config.inputs.etw, produces=[q]))
        from_pipeline = []
        if config.outputs.stdout is not None:
            q = queue("output-stdout", config.queue.output_bytes)
            from_pipeline.append(q)
            specs.append(ChildSpec(role="output stdout", kind="output", build=OUTPUTS["stdout"],
                                   config=config.outputs.stdout, consumes=[q], keep_stdout=True))
        for kind in ("tcp", "grpc", "jetstream"):
            for cfg in getattr(config.outputs, kind):
                role = f"output {kind}" if cfg.name == kind else f"output {kind} {cfg.name}"
                q = queue(f"output-{kind}-{cfg.name}", config.queue.output_bytes)
                from_pipeline.append(q)
                specs.append(ChildSpec(role=role, kind="output", build=OUTPUTS[kind], config=cfg,
                                       consumes=[q]))
        specs.append(ChildSpec(role="pipeline", kind="pipeline", build=pipeline.build,
                               config=config.pipeline, consumes=to_pipeline,
                               produces=from_pipeline))
        inputs = [s for s in specs if s.kind == "input"]
        outputs = [s for s in specs if s.kind == "output"]
        board = ProgressBoard.create(inputs=len(inputs), outputs=len(outputs))
        queues.append(board)
        for i, s in enumerate(inputs):
            s.progress = lambda i=i: board.input(i)
        for o, s in enumerate(outputs):
            s.progress = lambda o=o: board.output(o)
    except BaseException:
        for q in queues:
            q.destroy()
        raise
    return specs, queues
