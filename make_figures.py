"""Regenerate figures/ by running every implemented script on the shipped models (what `make figures` runs)."""
import subprocess
import sys
import time

from tqdm import tqdm

# (script, arguments): each run writes its figure and its JSON result; figures are drawn from those results.
RUNS = [
    ("verify.py", ["--model", "twoclass", "--index", "2", "--epsilon", "0.1",
                   "--figure", "figures/verify_twoclass_2.png", "--json", "results/verify_twoclass_2.json"]),
    ("verify.py", ["--model", "multiclass", "--index", "0", "--epsilon", "0.05",
                   "--figure", "figures/verify_multiclass_0.png", "--json", "results/verify_multiclass_0.json"]),
    ("verify.py", ["--model", "cnn_simple", "--index", "0", "--epsilon", "0.05",
                   "--figure", "figures/verify_cnn_simple_0.png", "--json", "results/verify_cnn_simple_0.json"]),
    ("min_adv_card.py", ["--model", "twoclass", "--index", "2", "--figure", "figures/min_adversarial_card.png",
                         "--json", "results/min_adv_card_twoclass_2.json"]),
    ("min_adv_sum.py", ["--model", "twoclass", "--index", "2", "--norm", "l2", "--figure",
                        "figures/min_adversarial_sse.png", "--json", "results/min_adv_sum_twoclass_2.json"]),
    ("min_adv_sum.py", ["--model", "multiclass", "--index", "0", "--norm", "l2",
                        "--figure", "figures/adversarial_multiclass.png",
                        "--json", "results/min_adv_sum_multiclass_0.json"]),
    ("min_explanation.py", ["--model", "twoclass", "--index", "2", "--figure", "figures/explanation.png",
                            "--json", "results/explanation_twoclass_2.json"]),
    ("min_explanation.py", ["--model", "multiclass", "--epsilon", "0.05", "--indices", "0:16", "--jobs", "2",
                            "--out-dir", "results/explanations_multiclass_eps0.05",
                            "--figure", "figures/explanations_grid.png",
                            "--json", "results/explanations_multiclass_eps0.05.json"]),
    ("binary.py", ["minflips", "--index", "16", "--encodings", "search,cnf,ip", "--figure", "figures/binary_flips.png",
                   "--json", "results/binary_minflips_16.json"]),
] + [
    run for index in (0, 1) for run in (
        ("min_adv_card.py", ["--model", "cnn_simple", "--index", str(index),
                             "--figure", f"figures/adversarial_convolution_{index}.png",
                             "--json", f"results/min_adv_card_cnn_simple_{index}.json"]),
        ("min_adv_sum.py", ["--model", "cnn_simple", "--index", str(index), "--norm", "l2",
                            "--figure", f"figures/adv_conv_sq_{index}.png",
                            "--json", f"results/min_adv_sum_cnn_simple_{index}.json"]))
]


def main():
    failed = []
    for script, args in tqdm(RUNS, desc="figures", unit="run"):
        start = time.time()
        done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
        status = "ok" if done.returncode == 0 else f"failed ({done.stderr.strip().splitlines()[-1:]})"
        tqdm.write(f"{script} {' '.join(args[:4])}: {status} in {time.time() - start:.1f} s")
        if done.returncode != 0:
            failed.append(script)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
