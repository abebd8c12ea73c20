"""Two configurations of the `Verifier` on mnistfc instances, in one process, and their table.

Shared by the benchmarks that measure one verifier feature against a baseline (`bench_node_bounds`,
`bench_branching`, `bench_refine`). Their JSON file holds a run: ``{"machine": line, "limit": seconds,
"instances": "256x2:prop_1_0.03,...", "rows": [...]}``; each row names the instance and holds, per
configuration, ``verdict``, ``seconds``, ``nodes`` and ``lower_bound``. ``--report`` re-renders a section from
the saved run, so the table always describes the run that made it.
"""
import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import HelpFormatter, add_output_flags, machine_line, output_json, saved_json  # noqa: E402
from explain_mnist.onnx_io import read_onnx  # noqa: E402
from explain_mnist.results import write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402
from explain_mnist.vnnlib import read_vnnlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def comparison_parser(doc: str, default_instances: str, default_limit: float, section: str,
                      json_path: Path) -> argparse.ArgumentParser:
    """Return the parser of the options every comparison takes.

    --shared, --limit, --instances, --report, and `report.add_output_flags`' --update-results and --out
    (``section`` of RESULTS.md, the shipped ``json_path``).
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=HelpFormatter)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"),
                   help="folder of the mnistfc networks and properties")
    p.add_argument("--limit", type=float, default=default_limit, help="time limit per instance and configuration")
    p.add_argument("--instances", default=default_instances, help="comma-separated NET:PROPERTY pairs")
    p.add_argument("--report", action="store_true", help="re-render the table from the JSON file (--out, else the "
                   "shipped one), run nothing")
    add_output_flags(p, section, str(Path(json_path).relative_to(REPO)))
    return p


def comparison_run(args, configs: dict, json_path: Path, desc: str) -> dict:
    """Return the saved run (``args.report``: `report.saved_json`), else a new run of `compare_verifiers`.

    A new run is written to `report.output_json` (the shipped ``json_path`` only with --update-results);
    ``args.json_path`` is set to the file read or written.
    """
    if args.report:
        args.json_path = saved_json(args, json_path)
        return json.loads(args.json_path.read_text())
    args.json_path = output_json(args, json_path)
    run = dict(machine=machine_line(), limit=args.limit, instances=args.instances, rows=[])
    compare_verifiers(run, Path(args.shared), configs, args.json_path, desc)
    return run


def command_line(script: str, run: dict, default_instances: str, extra: str = "") -> str:
    """Return the command that made ``run`` (``extra``: the script's own options), in backquotes."""
    return (f"`OMP_NUM_THREADS=1 python benchmarks/{script} --limit {run['limit']:g}"
            + ("" if run["instances"] == default_instances else f" --instances {run['instances']}") + extra + "`")


def compare_verifiers(run: dict, folder: Path, configs: dict, json_path: Path, desc: str) -> list:
    """Fill ``run["rows"]``: one row per instance of ``run["instances"]`` with the verdict of each configuration.

    ``configs`` maps a name to `Verifier` keyword arguments (added to a time limit of ``run["limit"]``
    seconds and no MIP fallback). The run is written to ``json_path`` after every instance.
    """
    networks = {}
    for item in tqdm(run["instances"].split(","), desc=desc, unit="instance"):
        size, prop_name = item.split(":")
        if size not in networks:
            networks[size] = read_onnx(Path(folder) / f"mnist-net_{size}.onnx")
        prop = read_vnnlib(Path(folder) / f"{prop_name}.vnnlib")
        row = dict(network=size, property=prop_name)
        for name, kwargs in configs.items():
            verifier = Verifier(networks[size], time_limit=run["limit"], mip_fallback=False, **kwargs)
            v = verifier.verify(prop.lo, prop.hi, prop.label)
            row[name] = dict(verdict=v.verdict, seconds=round(v.seconds, 2), nodes=v.nodes,
                             lower_bound=float(v.lower_bound))
        run["rows"].append(row)
        tqdm.write(f"{item}: " + ", ".join(f"{n} {row[n]['verdict']} {row[n]['seconds']} s {row[n]['nodes']} nodes"
                                           for n in configs))
        write_json(json_path, run)
    return run["rows"]


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
