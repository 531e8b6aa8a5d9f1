"""Peak memory of one ResNet-38 + PCM inference pass, whole affinity vs chunked (l2g.models.pcm).

    python -m benchmarks.pcm_memory                 # 500x375 image at scale 2.0, plain + mirrored (batch 2)
    python -m benchmarks.pcm_memory --scale 1.5 --width-mult 0.25

The pass is what ``l2g cams`` runs per scale (l2g.method.attention_maps.multiscale_maps): the image at ``--scale``
and its mirror image as one batch of two, through the attention network in eval mode, without gradients.
At scale 2.0 a 500x375 image is 1000x750, the stride-8 map 125x94 = 11,750 pixels, so the PCM's
affinity has 2 x 11,750^2 = 276 M entries (1.1 GB in float32) when built whole. The backbone is ResNet-38
at ``--width-mult`` (default 1/8: the backbone's own memory is not what is measured); the PCM has the
release's sizes (64 + 128 + 3 -> 192), so its (h w)^2 part is the real one.

Memory is measured as the peak resident set size (``ru_maxrss`` of ``getrusage``) of a fresh child
process per variant, minus its resident size just before the pass (network and input built): what the
pass adds at its peak, allocator caching included. Each variant runs ``--repeats`` passes in its own
process (the peak over them is kept; every pass's time is printed). "whole" is the same code with one chunk
holding every target pixel, which computes what the unchunked PCM computed; "no_pcm" is the pass without
the PCM, to tell the backbone's share from the PCM's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("whole", "chunked", "no_pcm")  # no_pcm: the same pass without the PCM, for the backbone's share


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize()


def child(args: argparse.Namespace) -> dict:
    import torch

    from l2g.models.attention_net import AttentionNet
    from l2g.models.pcm import CHUNK_ELEMENTS, PixelCorrelation
    from l2g.models.resnet38 import ResNet38

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = ResNet38(args.width_mult)
    chunk = 1 << 62 if args.variant == "whole" else CHUNK_ELEMENTS
    pcm = None if args.variant == "no_pcm" else PixelCorrelation(backbone.intermediate_channels, (64, 128), 192, chunk)
    net = AttentionNet(backbone, 20, pcm).eval()
    height, width = round(args.height * args.scale), round(args.width * args.scale)
    image = torch.randn(1, 3, height, width)
    batch = torch.cat([image, image.flip(-1)])
    times = []
    before = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad():
        for _ in range(args.repeats):
            start = time.perf_counter()
            maps = net(batch).maps
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels = maps.shape[2] * maps.shape[3]
    return {"variant": args.variant, "input": [2, 3, height, width], "map": list(maps.shape[2:]),
            "affinity_entries": 2 * pixels * pixels, "rss_before": before, "peak_before": peak_before,
            "peak": peak, "peak_added": peak - max(before, 0), "seconds": times,
            "checksum": float(maps.double().abs().sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--width-mult", type=float, default=0.125)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(child(args)))
        return 0
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, "-m", "benchmarks.pcm_memory", "--variant", variant, "--height", str(args.height),
                   "--width", str(args.width), "--scale", str(args.scale), "--width-mult", str(args.width_mult),
                   "--threads", str(args.threads), "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    whole, chunked = results["whole"], results["chunked"]
    mib = 1 << 20
    print(f"ResNet-38 (width x{args.width_mult}) + PCM 64/128 -> 192, eval, no grad; input {whole['input']} "
          f"({args.height}x{args.width} at scale {args.scale}, plain + mirrored); map {whole['map']}, "
          f"affinity {whole['affinity_entries'] / 1e6:.0f} M entries ({whole['affinity_entries'] * 4 / mib:.0f} MiB "
          "float32 if built whole)")
    print("peak resident memory added by the pass (ru_maxrss of a fresh process minus RSS before the pass):")
    for variant in VARIANTS:
        r = results[variant]
        seconds = ", ".join(f"{s:.2f}" for s in r["seconds"])
        print(f"  {variant:<8} {r['peak_added'] / mib:8.0f} MiB   pass seconds: {seconds}")
    base = results["no_pcm"]["peak_added"]
    above = [(results[v]["peak_added"] - base) / mib for v in ("whole", "chunked")]
    print(f"ratio whole / chunked: {whole['peak_added'] / max(chunked['peak_added'], 1):.1f}x; above the pass without "
          f"PCM: {above[0]:.0f} vs {above[1]:.0f} MiB; same maps: |sum| {whole['checksum']:.6e} vs "
          f"{chunked['checksum']:.6e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
