"""From a Config to the processes and queues the supervisor runs.

    input file ----q----\\                  /----q---- output stdout
    input file ----q-----> pipeline ------<
    (input ebpf) --q----/                  \\----q---- output tcp / grpc

Every arrow is its own single-producer single-consumer shared-memory queue. The registries of
agent/components.py say which components there are and how each is built: one explicit table
per kind, no branch per kind here.
"""

from __future__ import annotations

import msgspec

from agent.components import INPUTS, OUTPUTS, PIPELINE
from agent.config import Config, instances, queue_bytes
from agent.supervisor import ChildSpec
from common.progress import ProgressBoard
from common.shmqueue import ShmQueue
from inputs.file.checkpoint import default_state_dir


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

    input_bytes, output_bytes = queue_bytes(config)
    try:
        to_pipeline = []
        state_dir = config.agent.state_dir or default_state_dir()
        tailed = [p for _, _, _, cfg in instances(config.inputs, INPUTS)
                  for p in getattr(cfg, "paths", ())]
        for kind, _, component, cfg in instances(config.inputs, INPUTS):
            if "state_dir" in cfg.__struct_fields__:  # a component's own, else the agent's
                cfg = msgspec.structs.replace(cfg, state_dir=cfg.state_dir or state_dir)
            if "log_paths" in cfg.__struct_fields__:  # the eBPF input follows writes to them
                cfg = msgspec.structs.replace(cfg, log_paths=[*cfg.log_paths, *tailed])
            name = getattr(cfg, "name", kind)
            q = queue(f"input-{name}", input_bytes)
            to_pipeline.append(q)
            specs.append(ChildSpec(role=_role("input", kind, name), kind="input",
                                   build=component.build, config=cfg, produces=[q],
                                   capabilities=component.capabilities))
        from_pipeline, routes = [], []
        metrics = config.pipeline.metrics
        for kind, _, component, cfg in instances(config.outputs, OUTPUTS):
            if "state_dir" in cfg.__struct_fields__:  # dead letters: its own, else the agent's
                cfg = msgspec.structs.replace(cfg, state_dir=cfg.state_dir or state_dir)
            name = getattr(cfg, "name", kind)
            q = queue(f"output-{kind}" + (f"-{name}" if component.many else ""),
                      output_bytes)
            from_pipeline.append(q)
            route = component.receives
            if route == "events" and kind == "stdout" and metrics.stdout:
                route = "both"
            routes.append(route)
            specs.append(ChildSpec(role=_role("output", kind, name), kind="output",
                                   build=component.build, config=cfg, consumes=[q],
                                   keep_stdout=component.keep_stdout,
                                   capabilities=component.capabilities))
        on = metrics.enabled or "metrics" in routes or "both" in routes
        fed = any(kind == "ebpf" and "process" in getattr(cfg, "probes", ())
                  for kind, _, _, cfg in instances(config.inputs, INPUTS))
        pipeline_cfg = msgspec.structs.replace(
            config.pipeline, routes=routes,
            metrics=msgspec.structs.replace(metrics, enabled=on),
            processes=msgspec.structs.replace(config.pipeline.processes, fed_by_events=fed))
        specs.append(ChildSpec(role="pipeline", kind="pipeline", build=PIPELINE.build,
                               config=pipeline_cfg, consumes=to_pipeline,
                               produces=from_pipeline, capabilities=PIPELINE.capabilities))
        inputs = [s for s in specs if s.kind == "input"]
        # Outputs of metric points carry no input's data: they are not on the board.
        outputs = [s for s, r in zip((s for s in specs if s.kind == "output"), routes)
                   if r != "metrics"]
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


def _role(what: str, kind: str, name: str) -> str:
    """``output tcp``, or ``output tcp siem`` for one named otherwise than its kind."""
    return f"{what} {kind}" if name == kind else f"{what} {kind} {name}"
