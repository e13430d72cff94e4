"""Benchmark: where the project's training step spends its time, per XLA operation.

Runs the step of benchmarks/train_step.py (same flags, same inputs already on the devices),
times --steps steps, then records --profile_steps more with `jax.profiler` and prints, from the
trace, each operation's time per step: grouped by kind (the HLO name without its number:
every `transpose_copy_fusion.N` together), then the slowest single operations with the shape
they produce in the optimised HLO. On a GPU the times are the device's kernels (each tagged
with its HLO operation by XLA); on a CPU they are XLA's host threads. XLA CPU hands its larger
Eigen convolutions to its thread pool, where the trace does not time them (their events end when
they are handed over), so on a CPU the table is mostly the rest of the step (layout copies,
fusions, reductions, the optimizer) and the header says what share of the step's thread time
the traced events cover. The trace stays in --trace_dir for TensorBoard or
Perfetto.

    python benchmarks/profile_step.py --batch_size 2 --clips 2 --spectrogram_size 224
    python benchmarks/profile_step.py --batch_size 32 --clips 10 --precision bfloat16  # GPU
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

# An HLO instruction in the optimised module's text: `%name = shape opcode(...` ("ROOT " first
# for a computation's result).
HLO_LINE = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")


def parse_args():
    from jax_step import add_step_flags

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_flags(p)
    p.add_argument("--profile_steps", type=int, default=3, help="steps recorded in the trace")
    p.add_argument("--top", type=int, default=25, help="rows in each table")
    p.add_argument("--trace_dir", default=None,
                   help="where jax.profiler writes the trace (default: a new temporary folder)")
    return p.parse_args()


def load_trace(trace_dir: str) -> tuple[list[dict], dict[int, str]]:
    """The complete events ("ph": "X") of the newest Perfetto trace under trace_dir, and the
    process names by pid ("/host:CPU", "/device:GPU:0", ...)."""
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True),
                   key=os.path.getmtime)
    if not paths:
        raise SystemExit(f"error: {trace_dir}: jax.profiler wrote no *.trace.json.gz")
    with gzip.open(paths[-1], "rt") as f:
        events = json.load(f)["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    return [e for e in events if e.get("ph") == "X"], processes


def op_times(events: list[dict], processes: dict[int, str], steps: int
             ) -> tuple[str, dict[str, float], dict[str, int]]:
    """Milliseconds per step and launches per step of each HLO operation, from the events XLA
    tagged with `hlo_op`: the devices' where there are any (GPU kernels), else the host's.
    Returns (where the times come from, {op: ms}, {op: count})."""
    tagged = [e for e in events if "hlo_op" in e.get("args", {})]
    on_device = [e for e in tagged if processes.get(e["pid"], "").startswith("/device:")]
    chosen, where = (on_device, "device kernels") if on_device else (tagged, "host threads")
    ms, count = collections.Counter(), collections.Counter()
    for e in chosen:
        op = e["args"]["hlo_op"]
        ms[op] += e.get("dur", 0.0) / 1e3 / steps
        count[op] += 1
    return where, dict(ms), {op: round(n / steps) for op, n in count.items()}


def op_kind(op: str) -> str:
    """`transpose_copy_fusion.12` -> `transpose_copy_fusion`."""
    return re.sub(r"\.\d+$", "", op)


def hlo_shapes(hlo_text: str) -> dict[str, str]:
    """{instruction name: the shape it produces} over every computation of an HLO module's text."""
    shapes = {}
    for line in hlo_text.splitlines():
        match = HLO_LINE.match(line)
        if match:
            shapes.setdefault(match.group(1), _leading_shape(match.group(2)))
    return shapes


def _leading_shape(text: str) -> str:
    """'f32[2,3]{1,0} add(...)' -> 'f32[2,3]{1,0}'; a tuple shape '(s32[], (f32[2], ...)) while(...'
    -> the whole parenthesised tuple."""
    if not text.startswith("("):
        return text.split(" ", 1)[0]
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[:i + 1]
    return text


def report(where: str, ms: dict[str, float], count: dict[str, int], shapes: dict[str, str],
           step_ms: float, threads: int, top: int) -> list[str]:
    """The printed tables, as lines."""
    traced = sum(ms.values())
    lines = [f"step {step_ms:.1f} ms (median); traced operations ({where}): {traced:.1f} ms per "
             f"step, {100 * traced / (step_ms * threads):.0f}% of {threads} x the step's time"]
    kinds, kind_count = collections.Counter(), collections.Counter()
    for op, t in ms.items():
        kinds[op_kind(op)] += t
        kind_count[op_kind(op)] += count[op]
    lines += ["", "| kind | ms per step | share of traced | ops per step |", "|---|---|---|---|"]
    lines += [f"| {kind} | {t:.1f} | {100 * t / traced:.1f}% | {kind_count[kind]} |"
              for kind, t in kinds.most_common(top)]
    lines += ["", "| operation | shape | ms per step | launches per step |", "|---|---|---|---|"]
    lines += [f"| {op} | {shapes.get(op, '?')} | {t:.2f} | {count[op]} |"
              for op, t in collections.Counter(ms).most_common(top)]
    return lines


def main():
    # JAX loads only here, so that tests can import the trace functions above without it
    from pisa_jax import malloc

    malloc.restart_with_faster_malloc()  # as the training commands do, before JAX loads
    import jax
    from jax_step import JaxStep, median, time_interleaved

    args = parse_args()
    step = JaxStep(args)
    times = time_interleaved({"step": step.run}, args.steps)["step"]  # after one warm-up step
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="pisa_profile_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.profile_steps):
            step.run()
    events, processes = load_trace(trace_dir)
    where, ms, count = op_times(events, processes, args.profile_steps)
    device = step.devices[0]
    threads = os.cpu_count() if device.platform == "cpu" else 1
    print(f"profile: {device.device_kind} x{len(step.devices)}, jax {jax.__version__}, "
          f"depths {args.depths} {args.visual_backbone}, batch {args.batch_size}, "
          f"{args.clips}x{args.clip_length}x{args.image_size}^2, spectrogram "
          f"{args.spectrogram_size}^2, width {args.base_width}, {args.precision}, lowering "
          f"{args.conv_lowering}; {args.profile_steps} traced steps in {trace_dir}")
    if not ms:
        print("no operation in the trace carries an HLO name (this jax's profiler does not "
              "tag them): open the trace in TensorBoard or Perfetto instead")
        return
    if device.platform != "cpu" and where == "host threads":
        print(f"note: no {device.platform} kernel in the trace carries an HLO name; the times "
              "below are the host's (launches), not the device's")
    shapes = hlo_shapes(step.compiled.as_text())
    print("\n".join(report(where, ms, count, shapes, 1e3 * median(times), threads,
                           args.top)))


if __name__ == "__main__":
    main()
