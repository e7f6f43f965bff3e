"""Convert a SpiritLM/fairseq mHuBERT checkpoint to a transformers ``HubertModel`` directory.

    python conversions/convert_mhubert_to_hf.py mhubert_base_25hz.pt OUT_DIR [--output-layer 11]

Accepts SpiritLM's converted layout and raw fairseq checkpoints (read through
``spiritlens.checkpoints.pickle_safe``'s allow-list: fairseq classes become inert stand-ins, any other
pickled global is refused, nothing in the file runs). The conversion itself is
``spiritlens.units.hubert``; this script saves it (``save_pretrained`` plus a
``preprocessor_config.json``), reloads the directory and checks that its layer features equal the
in-memory conversion's on a fixed random waveform (prints the max |difference|; exits 1 if > 1e-5).
"""

from __future__ import annotations

import argparse
import sys

import torch

from spiritlens.units.hubert import DEFAULT_OUTPUT_LAYER, HubertFeatures

PARITY_TOLERANCE = 1e-5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="mhubert_base_25hz.pt (SpiritLM converted or raw fairseq)")
    parser.add_argument("out", help="output directory (config.json, model.safetensors, preprocessor_config.json)")
    parser.add_argument("--output-layer", type=int, default=DEFAULT_OUTPUT_LAYER,
                        help="1-based layer whose features are compared (SpiritLM: 11)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the random test waveform")
    args = parser.parse_args(argv)
    try:
        original = HubertFeatures.from_checkpoint(args.checkpoint, output_layer=args.output_layer)
        original.save_hf_dir(args.out)
        reloaded = HubertFeatures.from_hf_dir(args.out, output_layer=args.output_layer)
    except (ValueError, FileNotFoundError) as error:
        print(f"convert_mhubert_to_hf: error: {error}", file=sys.stderr)
        return 2
    generator = torch.Generator().manual_seed(0)
    length = max(int(args.seconds * original.sample_rate), original.receptive_field_samples)
    wave = torch.randn(length, generator=generator) * 0.1
    a, b = original.features(wave), reloaded.features(wave)
    diff = (a - b).abs().max().item() if a.shape == b.shape else float("inf")
    print(f"{args.checkpoint} -> {args.out}: layer {args.output_layer} features {list(a.shape)}, "
          f"max |diff| after save/load = {diff:.3g}")
    return 0 if diff <= PARITY_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
