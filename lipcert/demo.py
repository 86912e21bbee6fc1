"""``make demo``: certify the bundled digits MLP (trained at first use) on a few test inputs."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

import lipcert
from lipcert import zoo


def main(n_inputs: int = 3, eps_list=(0.005, 0.02), methods=("alpha-crown", "crown", "recurjac", "ibp"),
         report_dir="reports/demo") -> int:
    console = Console()
    console.print("[bold]lipcert demo[/bold]: local Lipschitz constants (l_inf -> l_inf) of the digits MLP "
                  f"({zoo.ZOO['digits-mlp'].description}), region = l_inf ball ∩ [0, 1]^64")
    with console.status("loading / training the digits MLP (first run only, a few seconds)"):
        model = zoo.load_model("digits-mlp")
    console.print(f"test accuracy {zoo.accuracy('digits-mlp'):.3f}")
    X, y = zoo.digits("test")
    table = Table(title="certified interval [lower, upper] on L (max over the 10 logits)")
    for col in ("input", "label", "eps", "method", "lower", "upper", "upper/lower", "bound s"):
        table.add_column(col, justify="right")
    for i in range(n_inputs):
        for eps in eps_list:
            for m in methods:
                c = lipcert.local_lipschitz(model, X[i], eps, domain=(0, 1), method=m)
                table.add_row(str(i), str(int(y[i])), f"{eps:g}", m, f"{c.lower:.2f}", f"{c.upper:.2f}",
                              f"{c.ratio:.3f}", f"{c.timings['bound']:.3f}")
    console.print(table)
    console.print("upper is proved; lower is a difference quotient of two points of the region (the witness).")
    c = lipcert.local_lipschitz(model, X[0], 0.02, domain=(0, 1), method="bab", bab_time=10)
    console.print(f"branch-and-bound (10 s budget) on input 0, eps 0.02: {c!r}")
    if report_dir:
        from .report.plots import write_report
        with console.status("writing the report (bound vs eps for four methods)"):
            _, files = write_report(model, X[0], report_dir, eps_list=(0.002, 0.005, 0.01, 0.02, 0.05), domain=(0, 1),
                                    title="lipcert demo: digits MLP, input 0")
        console.print("report: " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
