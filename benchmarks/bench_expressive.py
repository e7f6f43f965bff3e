"""CPU cost of SpiritLM Expressive's pitch and style encoders per second of audio.

    .venv/bin/python benchmarks/bench_expressive.py [--seconds 5 10] [--repeats 3] [--threads 1]
                                                    [--json benchmarks/results/expressive_cost.json]

Times, on a harmonic test signal (gliding pitch with pauses), each stage of the Expressive front end at
the size of the real checkpoints (the weights do not change the cost, only the architecture does):

- **FCPE** F0: torchfcpe's bundled network with its real weights (mel front end + CFNaiveMelPE,
  ``local_argmax``), plus spiritlens' voicing/interpolation/resizing to the 200 Hz track;
- **F0 VQ-VAE** encoder + codebook: SpiritLM's ``config.yaml`` is not public here, so the speech-resynthesis
  F0 VQ-VAE size is assumed (width 32, 4 dilated residual blocks, 128-dim codes, 64 bins, 16x down);
- **style encoder**: wav2vec2-base (``Wav2Vec2Config()`` defaults: 7 conv layers of 512, 12 layers of 768,
  FFN 3072) as ``Wav2Vec2ForSequenceClassification`` with 100 labels, random weights, spiritlens' forward
  (normalise, last hidden state, projector, 50-frame means, classifier).

Reports the median over ``--repeats`` of seconds per audio second (real-time factor) per stage.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spiritlens.units.pitch import F0Quantizer, FcpeF0, f0_track, normalize_f0
from spiritlens.units.style import StyleEncoder

SR = 16_000
ASSUMED_F0_CONFIG = {
    "encoder_params": {"input_emb_width": 2, "output_emb_width": 128, "levels": 1, "downs_t": [4], "strides_t": [2],
                       "width": 32, "depth": 4, "m_conv": 1.0, "dilation_growth_rate": 3},
    "vq_params": {"l_bins": 64, "emb_width": 128, "mu": 0.99, "levels": 1},
    "features": "norm_f0_interp,vuv",
}


def signal(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(165 + 55 * np.sin(2 * np.pi * 0.8 * t)) / SR
    wav = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 * (np.sin(2 * np.pi * 1.5 * t) > -0.4)
    return (wav + 0.003 * np.random.default_rng(0).standard_normal(t.shape)).astype(np.float32)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    fcpe = FcpeF0()
    vqvae = F0Quantizer(ASSUMED_F0_CONFIG).eval()
    torch.manual_seed(0)
    style = StyleEncoder(Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=100)).eval())
    rows = []
    for seconds in args.seconds:
        wav = signal(seconds)
        tensor = torch.from_numpy(wav)
        f0, vuv = f0_track(fcpe.raw_f0(tensor), len(wav))
        x = torch.stack([normalize_f0(f0, vuv), vuv]).unsqueeze(0)
        with torch.inference_mode():
            costs = {
                "fcpe_f0": timed(lambda: f0_track(fcpe.raw_f0(tensor), len(wav)), args.repeats),
                "f0_vqvae": timed(lambda: vqvae(x), args.repeats),
                "style_wav2vec2_base": timed(lambda: style.encode(wav), args.repeats),
            }
        row = {"audio_seconds": seconds, **{f"{k}_s_per_audio_s": v / seconds for k, v in costs.items()}}
        row["pitch_total_s_per_audio_s"] = row["fcpe_f0_s_per_audio_s"] + row["f0_vqvae_s_per_audio_s"]
        rows.append(row)
        print(f"{seconds:5.1f} s audio: FCPE {row['fcpe_f0_s_per_audio_s'] * 1000:7.1f} ms/s  "
              f"F0 VQ-VAE {row['f0_vqvae_s_per_audio_s'] * 1000:6.2f} ms/s  "
              f"style (wav2vec2-base) {row['style_wav2vec2_base_s_per_audio_s'] * 1000:7.1f} ms/s")
    result = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "assumed_f0_vqvae": ASSUMED_F0_CONFIG, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
