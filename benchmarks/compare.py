"""Two configurations of the `Verifier` on mnistfc instances, in one process, and their table.

Shared by the benchmarks that measure one verifier feature against a baseline (`bench_node_bounds`,
`bench_branching`, `bench_refine`). Their JSON file holds ``{"machine": line, "rows": [...]}``; each row names
the instance and holds, per configuration, ``verdict``, ``seconds``, ``nodes`` and ``lower_bound``.
"""
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explain_mnist.onnx_io import read_onnx  # noqa: E402
from explain_mnist.results import write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402
from explain_mnist.vnnlib import read_vnnlib  # noqa: E402


def compare_verifiers(instances: str, folder: Path, limit: float, configs: dict, json_path: Path, machine: str,
                      desc: str) -> list:
    """Return one row per instance ("256x2:prop_1_0.03,...") with the verdict of each configuration.

    ``configs`` maps a name to `Verifier` keyword arguments (added to a time limit of ``limit`` seconds
    and no MIP fallback). Rows are written to ``json_path`` after every instance.
    """
    rows, networks = [], {}
    for item in tqdm(instances.split(","), desc=desc, unit="instance"):
        size, prop_name = item.split(":")
        if size not in networks:
            networks[size] = read_onnx(Path(folder) / f"mnist-net_{size}.onnx")
        prop = read_vnnlib(Path(folder) / f"{prop_name}.vnnlib")
        row = dict(network=size, property=prop_name)
        for name, kwargs in configs.items():
            verifier = Verifier(networks[size], time_limit=limit, mip_fallback=False, **kwargs)
            v = verifier.verify(prop.lo, prop.hi, prop.label)
            row[name] = dict(verdict=v.verdict, seconds=round(v.seconds, 2), nodes=v.nodes,
                             lower_bound=float(v.lower_bound))
        rows.append(row)
        tqdm.write(f"{item}: " + ", ".join(f"{n} {row[n]['verdict']} {row[n]['seconds']} s {row[n]['nodes']} nodes"
                                           for n in configs))
        write_json(json_path, dict(machine=machine, rows=rows))
    return rows


def ratio(new: dict, baseline: dict) -> str:
    """Return baseline seconds / new seconds, "> x" where only the new one decided, "-" where it did not."""
    if new["verdict"] == "unknown" or new["seconds"] <= 0:
        return "-"
    value = baseline["seconds"] / new["seconds"]
    return f"> {value:.1f}" if baseline["verdict"] == "unknown" else f"{value:.1f}"


def comparison_table(rows: list, new: str, baseline: str, labels: tuple) -> list:
    """Return markdown lines: a summary of the instances both decided, then one table row per instance."""
    both = [r for r in rows if r[new]["verdict"] != "unknown" and r[baseline]["verdict"] != "unknown"]
    only = [r for r in rows if r[new]["verdict"] != "unknown" and r[baseline]["verdict"] == "unknown"]
    lost = [r for r in rows if r[new]["verdict"] == "unknown" and r[baseline]["verdict"] != "unknown"]
    new_total = sum(r[new]["seconds"] for r in both)
    baseline_total = sum(r[baseline]["seconds"] for r in both)
    summary = (f"Decided by both: {len(both)} of {len(rows)}, in {new_total:.1f} s with {labels[0]} against "
               f"{baseline_total:.1f} s with {labels[1]}"
               + (f" ({baseline_total / new_total:.1f}x)" if new_total > 0 else "")
               + f". Decided only with {labels[0]}: {len(only)}; only with {labels[1]}: {len(lost)}. "
               f"Ratio: {labels[1]} seconds / {labels[0]} seconds (\"> x\": {labels[1]} hit the limit).")
    lines = [summary, "",
             f"| network | property | {labels[0]} | s | nodes | bound | {labels[1]} | s | nodes | bound | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r[new], r[baseline]
        lines.append(f"| {r['network']} | {r['property']} | {a['verdict']} | {a['seconds']} | {a['nodes']} | "
                     f"{float(a['lower_bound']):.4g} | {b['verdict']} | {b['seconds']} | {b['nodes']} | "
                     f"{float(b['lower_bound']):.4g} | {ratio(a, b)} |")
    return lines
