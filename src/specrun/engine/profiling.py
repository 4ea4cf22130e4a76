"""torch.profiler on request (``profiler { enabled true }`` or ``specrun run --profile-trace``).

The schedule (wait, warmup, active) follows the spec; the trace is written as
Chrome trace JSON under the run directory, viewable in chrome://tracing or
Perfetto, and a table of the top operators goes to the events log.
"""

from __future__ import annotations

import torch

from specrun.sections import ProfilerPolicy


def profiled(run, policy: ProfilerPolicy, body):
    out_dir = run.dir.path / policy.dir
    out_dir.mkdir(parents=True, exist_ok=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if run.ctx.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    wait, warmup, active = policy.wait, policy.warmup, policy.active
    written = []

    def on_ready(prof):
        path = out_dir / f"trace_step{prof.step_num}.json"
        prof.export_chrome_trace(str(path))
        written.append(path)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        run.dir.event("profile", run.counters.step, trace=str(path.name), top=table)

    schedule = torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1)
    with torch.profiler.profile(activities=activities, schedule=schedule, on_trace_ready=on_ready,
                                record_shapes=True, profile_memory=True) as prof:
        run.profiler_step = prof.step
        try:
            return body()
        finally:
            run.profiler_step = None
            if written:
                run.console.say(f"profiler trace: {written[-1]}")
