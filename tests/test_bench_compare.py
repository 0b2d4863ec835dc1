"""scripts/bench_compare.py: the side-by-side table of recordings (docs/benchmarks.md's)."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_compare.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_compare", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(op, size, mode, impl, ratios=None, faults=None):
    ratios = ratios or None
    return {
        "op": op,
        "size": size,
        "mode": mode,
        "impl": impl,
        "ratios": ratios,
        "speedup": sorted(ratios)[len(ratios) // 2] if ratios else None,
        "ratio_min": min(ratios) if ratios else None,
        "ratio_max": max(ratios) if ratios else None,
        "faults_per_call": faults,
    }


def _report(floor_ratios, peer_ratios):
    return {
        "results": [
            _row("gdn", "N=16 C=64 32x32", "fwd", "fused", faults=0.0),
            _row("gdn", "N=16 C=64 32x32", "fwd", "GEMM floor", floor_ratios, 0.0),
            _row("ssim", "N=64 C=3 64x64", "fwd+bwd", "fused", faults=2.5),
            _row("ssim", "N=64 C=3 64x64", "fwd+bwd", "pytorch_msssim", peer_ratios, 0.0),
        ]
    }


def test_floor_rows_are_turned_round_and_peers_are_not(capsys, tmp_path):
    mod = _module()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report([0.5, 0.8, 0.4], [10.0, 12.0, 11.0])))
    b.write_text(json.dumps(_report([1.0, 1.0, 1.0], [8.0, 9.0, 7.0])))
    mod.main([f"A={a}", f"B={b}"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| op, size | mode | measure | A | B |")
    gdn = next(line for line in lines if line.startswith("| gdn, N=16 C=64 32x32 | fwd |"))
    # floor / fused = 0.5 (0.4-0.8) becomes fused / floor = 2 (1.25-2.5)
    assert "| 2x (1.25-2.5) | 1x (1-1) |" in gdn
    ssim = next(line for line in lines if line.startswith("| ssim, N=64 C=3 64x64 | fwd+bwd |"))
    assert "| 11x (10-12) | 8x (7-9) | 2.50 / 2.50 |" in ssim
    # a goal row neither recording has is shown as missing, not dropped or invented
    ms = next(line for line in lines if line.startswith("| ms_ssim, N=4 C=3 256x256"))
    assert "| - | - | - / - |" in ms


def test_op_filter_lists_every_baseline_of_the_family(capsys, tmp_path):
    mod = _module()
    a = tmp_path / "a.json"
    a.write_text(json.dumps(_report([0.5, 0.5, 0.5], [10.0, 10.0, 10.0])))
    mod.main(["--op", "ssim", f"X={a}"])
    rows = [line for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["| ssim, N=64 C=3 64x64 | fwd+bwd | vs pytorch_msssim | 10x (10-10) | 2.50 |"]
