"""Peak memory of loading a bf16 SpiritLM-layout checkpoint with HookedSpiritLM (no float32 copy).

    .venv/bin/python benchmarks/bench_load_memory.py [--layers 24 --d-model 1024]

Writes a random mid-size model in bfloat16 (SpiritLM ships bf16 ``pytorch_model.bin``), then, in a
fresh process, loads it with ``dtype=bfloat16`` and reports the growth of peak RSS over the
process after imports, against the size of the weights. A float32 copy at any point would show
as a peak of at least 2x the bf16 weights (3x counting the bf16 result).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, torch
import transformer_lens.model_bridge, transformers  # imports before the baseline
from spiritlens import HookedSpiritLM
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak (VmHWM) to the current RSS: the peak below is the load's own
model = HookedSpiritLM.from_pretrained(sys.argv[1], dtype="bfloat16")
peak = status("VmHWM")
tokens = model.to_tokens("The capital of Italy is")
with torch.no_grad():
    model(tokens)
after_forward = status("VmHWM")
weights = sum(p.numel() * p.element_size() for p in model.hf_model.parameters())
print(json.dumps({"baseline_mb": base / 2**20, "peak_mb": peak / 2**20,
                  "peak_after_forward_mb": after_forward / 2**20, "weights_mb": weights / 2**20,
                  "dtypes": sorted({str(p.dtype) for p in model.hf_model.parameters()})}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--json")
    args = parser.parse_args()
    import torch

    from spiritlens.synthetic.tiny import write_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        directory = write_tiny_model(Path(folder) / "m", hidden_size=args.d_model, num_hidden_layers=args.layers,
                                     intermediate_size=int(args.d_model * 2.6875), num_attention_heads=args.d_model // 64,
                                     num_key_value_heads=args.d_model // 64, vocab_size=32768, dtype=torch.bfloat16,
                                     initializer_range=0.02)
        checkpoint_mb = (directory / "pytorch_model.bin").stat().st_size / 2**20
        child = subprocess.run([sys.executable, "-c", CHILD, str(directory)], capture_output=True, text=True)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
    report = json.loads(child.stdout.strip().splitlines()[-1])
    report["checkpoint_mb"] = checkpoint_mb
    report["load_growth_mb"] = report["peak_mb"] - report["baseline_mb"]
    report["growth_with_forward_mb"] = report["peak_after_forward_mb"] - report["baseline_mb"]
    report["growth_over_weights"] = report["growth_with_forward_mb"] / report["weights_mb"]
    report = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in report.items()}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if report["growth_over_weights"] >= 2.0:
        print("FAIL: loading grew memory by 2x the bf16 weights or more (a float32 copy?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
