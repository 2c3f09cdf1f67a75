"""The benchmark script runs and writes the ratios it promises (no timing is asserted)."""
import importlib.util
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_ratios(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--out", str(out), "--repeats", "1", "--warmup", "0", "--rounds", "2", "--width", "4",
                "--image-size", "8", "--batch-size", "8", "--device", "cpu"])
    result = json.loads(out.read_text())
    r = result["rounds"]                          # per-round medians; ratios are medians of per-round ratios
    med = statistics.median
    assert result["ratio_to_erm"]["erm"] == 1.0
    assert result["ratio_to_erm"]["cutmix"] == med(a / b for a, b in zip(r["cutmix"], r["erm"]))
    assert {"gradmix", "gradmix_random", "gradmix_shared", "cutmix", "mixup"} <= set(result["ratio_to_erm"])
    s = result["step_seconds"]
    # both attribution passes, for both objectives, against the random centre of the same pass
    for o in ("gt_logit", "ce"):
        for p in ("separate", "shared"):
            a = result["attribution"][o][p]
            assert a["overhead"] == med((g - z) / e for g, z, e in zip(r[f"gradmix[{o},{p}]"], r[f"gradmix[random,{p}]"],
                                                                         r["erm"]))
            assert a["gradmix_to_erm"] == result["ratio_to_erm"][f"gradmix[{o},{p}]"]
    assert result["attribution_overhead"] == result["attribution"]["gt_logit"]["separate"]["overhead"]
    # params.yaml's gradmix / gradmix_random / gradmix_shared are those variants: timed once, reported alike
    assert s["gradmix"] == s["gradmix[gt_logit,separate]"] and s["gradmix_shared"] == s["gradmix[gt_logit,shared]"]
    assert s["gradmix_random"] == s["gradmix[random,separate]"]
    assert set(result["switches"]) == {"bf16", "channels_last=True"}
    assert result["switches"]["bf16"]["erm"] == med(a / b for a, b in zip(r["erm@bf16"], r["erm"]))
    assert s["erm"] == med(r["erm"]) and len(r["erm"]) == 2
    assert set(result["targets"]) == {"shared overhead, gt_logit (ERM steps)", "shared overhead, ce (ERM steps)",
                                      "GradMix shared / ERM"}
    assert all(0 <= v for v in result["noise"].values()) and result["setup"]["rounds"] == 2
    # bench.threads (1) replaces the train.threads (2) that loading params.yaml pinned: the CPU-time clock
    assert result["machine"]["threads"] == 1 and result["clock"] == "cpu"
    assert set(result["wall_step_seconds"]) == set(s)
    assert result["setup"]["batch_size"] == 8 and result["images_per_second"]["erm"] == 8 / s["erm"]
