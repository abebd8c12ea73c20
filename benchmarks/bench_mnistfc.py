"""Run verify.py's engine on the VNN-COMP 2021 mnistfc benchmark and compare with the competition's verdicts.

    python benchmarks/bench_mnistfc.py [--limit S] [--nets 256x2,256x4,256x6] [--props 0,1,...] [--shared PATH]
                                       [--update-results] [--out FILE] [--resume] [--section NAME]

The section is named after the nets ("mnistfc" for all three, else e.g. "mnistfc_256x2"). With --update-results
the per-instance table and the counts go to that section of benchmarks/RESULTS.md and the rows to
benchmarks/<section>.json; without it the table is only printed and the rows go to
results/benchmarks/<section>.json (or --out), so a partial run never replaces the shipped tables. The JSON file
is written atomically after every instance.
"""
import argparse
import csv
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import HelpFormatter, add_output_flags, machine_line, output_json, publish  # noqa: E402
from explain_mnist.onnx_io import read_onnx  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402
from explain_mnist.verification import verify_box  # noqa: E402
from explain_mnist.vnnlib import read_vnnlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VERDICT_NAMES = {"robust": "holds", "not_robust": "violated", "unknown": "unknown"}
COMPETITION = "alpha-beta-CROWN 70 (GPU), VeriNet 60, Debona 59, oval 58, ERAN 56, Marabou 54 of 90"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"),
                   help="folder of the mnistfc networks, properties and the competition's verdicts")
    p.add_argument("--limit", type=float, default=None, help="time limit per instance (default: the competition's)")
    p.add_argument("--nets", default="256x2,256x4,256x6", help="comma-separated networks")
    p.add_argument("--props", default=None, help="comma-separated property indices (default: all)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in the JSON file, run the rest")
    p.add_argument("--section", default=None, help="name of the RESULTS.md section (default: from --nets)")
    add_output_flags(p, "<section>", "benchmarks/<section>.json")
    args = p.parse_args()
    args.machine = machine_line()   # the code measured is the code at the start of the run
    default_nets = args.nets == "256x2,256x4,256x6"
    args.section = args.section or ("mnistfc" if default_nets else "mnistfc_" + args.nets.replace(",", "_"))
    args.out = str(output_json(args, REPO / "benchmarks" / f"{args.section}.json"))
    folder = Path(args.shared)
    consensus = {(r["network"], r["property"]): r for r in csv.DictReader(open(folder / "verdicts_vnncomp2021.csv"))}
    nets = {f"mnist-net_{n}.onnx" for n in args.nets.split(",")}
    props = None if args.props is None else {int(k) for k in args.props.split(",")}
    instances = [row for row in csv.reader(open(folder / "mnistfc_instances.csv"))
                 if row[0] in nets and (props is None or int(row[1].split("_")[1]) in props)]
    networks = {name: read_onnx(folder / name) for name in nets}
    rows = read_json(args.out) if args.resume and Path(args.out).exists() else []
    done = {(r["network"], r["property"]) for r in rows}
    instances = [row for row in instances if (row[0], row[1]) not in done]
    for network, prop_name, limit in tqdm(instances, desc="mnistfc", unit="instance"):
        prop = read_vnnlib(folder / prop_name)
        net = networks[network]
        limit = float(limit) if args.limit is None else args.limit
        start = time.perf_counter()
        result = verify_box(net, prop.lo, prop.hi, prop.label, time_limit=limit)
        ours = VERDICT_NAMES[result["verdict"]]
        known = consensus.get((network, prop_name), {"consensus": "n/a", "fastest_agreeing_seconds": "n/a"})
        contradiction = ours != "unknown" and known["consensus"] in ("holds", "violated") and ours != known["consensus"]
        rows.append({"network": network, "property": prop_name, "ours": ours, "method": result["method"],
                     "seconds": round(time.perf_counter() - start, 2), "nodes": result["nodes"],
                     "consensus": known["consensus"], "fastest_tool_seconds": known["fastest_agreeing_seconds"],
                     "tools_agreeing": known.get("tools_agreeing", "n/a"),
                     "limit": limit, "contradiction": contradiction, "lower_bound": result["lower_bound"],
                     "stages": result["stages"]})
        tqdm.write(f"{network} {prop_name}: {ours} by {result['method']} in {rows[-1]['seconds']} s "
                   f"({result['nodes']} nodes); consensus {known['consensus']}" + ("  CONTRADICTION" if contradiction else ""))
        write_json(args.out, rows)
    report(rows, args)


def report(rows, args):
    rows = sorted(rows, key=lambda r: (r["network"], r["property"].split("_")[2], int(r["property"].split("_")[1])))
    decided = [r for r in rows if r["ours"] != "unknown"]
    lines = [f"## VNN-COMP 2021 mnistfc ({len(rows)} instances)", "", args.machine,
             "Command: `OMP_NUM_THREADS=1 python benchmarks/bench_mnistfc.py" + (f" --limit {args.limit:g}" if args.limit else "")
             + (f" --nets {args.nets}" if args.nets != "256x2,256x4,256x6" else "")
             + (f" --props {args.props}" if args.props else "")
             + (f" --section {args.section}" if args.section != "mnistfc" and args.props else "") + "`, 1 thread.", "",
             f"Decided {len(decided)} of {len(rows)}; contradictions with the consensus: "
             f"{sum(r['contradiction'] for r in rows)}. Competition (90 instances): {COMPETITION}."
             + ("".join(f" (The verdicts file has no row for {r['network']} {r['property']}: its consensus shows as "
                        "n/a.)" for r in rows if r["consensus"] == "n/a")), ""]
    for net in sorted({r["network"] for r in rows}):
        sub = [r for r in rows if r["network"] == net]
        known = [r for r in sub if r["consensus"] in ("holds", "violated")]
        lines.append(f"- {net}: {sum(r['ours'] != 'unknown' for r in sub)} of {len(sub)} decided; of the "
                     f"{len(known)} the competition decided, {sum(r['ours'] != 'unknown' for r in known)}")
    single = [r for r in rows if r.get("tools_agreeing") == "1" and r["consensus"] == "violated"]
    if single:
        lines += ["", f"{len(single)} 'violated' consensus verdicts here rest on one tool alone (alpha-beta-CROWN "
                  "and the other strong tools timed out on them; the README of the shared benchmark notes that one "
                  "tool, RPM, disagreed with the majority on 37 instances): no attack of ours finds a counterexample "
                  "there, so treat them as unconfirmed."]
    lines += ["", "| network | property | ours | method | seconds | nodes | consensus (tools) | fastest tool s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = " **CONTRADICTS**" if r["contradiction"] else ""
        lines.append(f"| {r['network']} | {r['property']} | {r['ours']}{flag} | {r['method']} | {r['seconds']} | "
                     f"{r['nodes']} | {r['consensus']} ({r.get('tools_agreeing', 'n/a')}) | {r['fastest_tool_seconds']} |")
    publish(args, args.section, "\n".join(lines))


if __name__ == "__main__":
    main()
