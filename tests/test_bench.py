"""The benchmark script runs and writes the ratios it promises (no timing is asserted)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_writes_ratios(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    bench.main(["--out", str(out), "--repeats", "1", "--warmup", "0", "--width", "4", "--image-size", "8",
                "--batch-size", "8", "--device", "cpu"])
    result = json.loads(out.read_text())
    assert result["ratio_to_erm"]["erm"] == 1.0
    assert {"gradmix", "gradmix_random", "cutmix", "mixup"} <= set(result["ratio_to_erm"])
    s = result["step_seconds"]
    assert result["attribution_overhead"] == (s["gradmix"] - s["gradmix_random"]) / s["erm"]
    assert result["setup"]["batch_size"] == 8
