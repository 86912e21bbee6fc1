"""The ``lipcert`` command. Thin: parse, call the public API, print a table, write JSON.

Exit codes: 0 success; 2 bad input (one line naming the problem; ``--debug`` for a traceback);
3 unsupported model; 4 the time budget ran out before the requested tolerance; 1 anything else.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Certified bounds on the Lipschitz constants of neural networks.")
zoo_app = typer.Typer(help="Small trained models shipped with lipcert.")
app.add_typer(zoo_app, name="zoo")
out = Console()
err = Console(stderr=True)
EXIT_TIME = 4


def _run(fn, debug: bool):
    from ..errors import LipcertError
    try:
        return fn()
    except typer.Exit:
        raise
    except LipcertError as e:
        if debug:
            raise
        err.print(f"[red]error:[/red] {str(e).splitlines()[0]}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code)
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        err.print(f"[red]error:[/red] {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _domain(s: Optional[str]):
    if s is None:
        return None
    from ..errors import InvalidInput
    try:
        lo, hi = (float(v) for v in s.split(","))
    except ValueError:
        raise InvalidInput(f"--domain must be 'lo,hi', got {s!r}") from None
    return lo, hi


def _outputs(s: Optional[str]):
    if s is None:
        return None
    from ..errors import InvalidInput
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise InvalidInput(f"--outputs must be comma-separated indices, got {s!r}") from None


MODEL_HELP = ("ONNX file, torch.export program (.pt2), weights (.pt state_dict / .safetensors, with "
              "--model-class), or zoo:NAME")
# every command that takes a model takes these three; nothing from a model file runs without --trust-pickle
MODEL_CLASS = typer.Option(None, "--model-class", help="the model's class for a weights file: pkg.module:Class")
MODEL_ARGS = typer.Option(None, "--model-args", help="JSON object of keyword arguments for --model-class")
TRUST = typer.Option(False, "--trust-pickle", help="allow a pickled whole module (torch.save(model)): this runs "
                                                  "code from the file; only for files you trust")


def _load(model: str, model_class=None, model_args=None, trust_pickle: bool = False):
    from ..io import load
    return load(model, model_class=model_class, model_args=model_args, trust_pickle=trust_pickle)


def _input(path: str):
    from ..io import load_input
    return load_input(path)


def _hash(model_path, model):
    from ..io import model_hash
    return model_hash(model, None if str(model_path).startswith("zoo:") else model_path)


def _cert_table(certs, title):
    t = Table(title=title)
    for c in ("input", "method", "eps", "lower", "upper", "upper/lower", "status", "seconds"):
        t.add_column(c, justify="right")
    for i, c in enumerate(certs):
        t.add_row(str(i), c.method, f"{c.eps:g}", f"{c.lower:.6g}", f"{c.upper:.6g}", f"{c.ratio:.4g}", c.status,
                  f"{c.seconds:.3f}")
    return t


@app.command()
def bound(model: str = typer.Argument(..., help=MODEL_HELP),
          input: str = typer.Option(..., "--input", "-i", help=".npy, .pt or .csv: one input or a batch"),
          eps: float = typer.Option(..., "--eps", help="radius of the l_inf ball"),
          norm: str = typer.Option("inf", "--norm", help="input norm p of the constant: inf, 2 or 1 (the region "
                                                         "stays the l_inf ball of radius eps)"),
          domain: Optional[str] = typer.Option(None, "--domain", help="lo,hi clipping the region, e.g. 0,1"),
          method: str = typer.Option("alpha-crown", "--method", help="alpha-crown, crown, recurjac, ibp, naive, bab, exact"),
          bab: Optional[float] = typer.Option(None, "--bab", help="seconds of branch-and-bound"),
          rtol: float = typer.Option(1e-3, "--rtol", help="BaB stops at upper/lower <= 1 + rtol"),
          outputs: Optional[str] = typer.Option(None, "--outputs", help="comma-separated output indices"),
          json_path: Optional[Path] = typer.Option(None, "--json", help="write the certificate(s) as JSON"),
          device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
          model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
          trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug", help="show tracebacks")):
    """Certify the local Lipschitz constant of MODEL around the input(s)."""
    def go():
        import lipcert
        from ..report.records import record, validate
        net = _load(model, model_class, model_args, trust_pickle)
        x = _input(input)
        kw = {"bab_time": bab} if bab is not None else {}
        if method in ("bab",) or bab is not None:
            kw.update(rtol=rtol, progress=sys.stderr.isatty())
        certs = lipcert.local_lipschitz(net, x, eps, norm=norm, domain=_domain(domain), outputs=_outputs(outputs),
                                        method=method, device=None if device == "cpu" else device, **kw)
        certs = certs if isinstance(certs, list) else [certs]
        out.print(_cert_table(certs, f"local Lipschitz constant of {model} (l{certs[0].norm} -> l_inf)"))
        if json_path is not None:
            h = _hash(model, net)
            xs = x if len(certs) > 1 else [x]
            recs = [record(c, x0=xi, model_hash=h, model_path=model, domain=_domain(domain), outputs=_outputs(outputs))
                    for c, xi in zip(certs, xs)]
            for r in recs:
                validate(r)
            json_path.write_text(json.dumps(recs[0] if len(recs) == 1 else recs, indent=2))
            out.print(f"wrote {json_path}")
        if any(c.status in ("time_limit", "domain_limit", "milp_unverified") for c in certs):
            err.print("time budget reached before the requested tolerance (the bounds printed are still valid)",
                      soft_wrap=True)
            raise typer.Exit(EXIT_TIME)
    _run(go, debug)


@app.command()
def jacobian(model: str, input: str = typer.Option(..., "--input", "-i"), eps: float = typer.Option(..., "--eps"),
             domain: Optional[str] = typer.Option(None, "--domain"), method: str = typer.Option("crown", "--method"),
             out_path: Optional[Path] = typer.Option(None, "--out", help="write the bounds as .npz"),
             model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
             trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Elementwise bounds on the Jacobian over the region."""
    def go():
        import numpy as np
        import lipcert
        net = _load(model, model_class, model_args, trust_pickle)
        lo, up = lipcert.jacobian_bounds(net, _input(input), eps, domain=_domain(domain), method=method)
        t = Table(title="Jacobian bounds (per output: min lower, max upper, mean width)")
        for c in ("output", "min lower", "max upper", "mean width", "sign-certified entries"):
            t.add_column(c, justify="right")
        for k in range(lo.shape[0]):
            signed = int(((lo[k] >= 0) | (up[k] <= 0)).sum())
            t.add_row(str(k), f"{float(lo[k].min()):.4g}", f"{float(up[k].max()):.4g}",
                      f"{float((up[k] - lo[k]).mean()):.4g}", f"{signed}/{lo[k].numel()}")
        out.print(t)
        if out_path is not None:
            np.savez(out_path, lower=lo.numpy(), upper=up.numpy())
            out.print(f"wrote {out_path}")
    _run(go, debug)


@app.command()
def monotonic(model: str, input: str = typer.Option(..., "--input", "-i"), eps: float = typer.Option(..., "--eps"),
              feature: int = typer.Option(..., "--feature"), output: int = typer.Option(0, "--output"),
              direction: str = typer.Option("increasing", "--direction"),
              vary: str = typer.Option("feature", "--vary", help="feature: only FEATURE varies; all: the whole ball"),
              domain: Optional[str] = typer.Option(None, "--domain"),
              bab: float = typer.Option(5.0, "--bab", help="seconds of input splitting when inconclusive"),
              model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
              trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Certify that OUTPUT is monotone in FEATURE on the region (or find a violation)."""
    def go():
        import lipcert
        net = _load(model, model_class, model_args, trust_pickle)
        r = lipcert.monotonicity(net, _input(input), eps, feature, output, direction=direction,
                                 domain=_domain(domain), vary=vary, bab_time=bab)
        out.print(repr(r))
        if r.status == "violated":
            w = r.witness
            out.print(f"witness: f(x1) = {w['f_x1']:.6g}, f(x2) = {w['f_x2']:.6g} with x2 = x1 + t e_{feature}; "
                      f"gradient entry {w['gradient']:.4g}")
    _run(go, debug)


@app.command("global")
def global_cmd(model: str, norm: str = typer.Option("2", "--norm", help="2, inf or 1 (LipSDP: 2 only)"),
               method: str = typer.Option("lipsdp", "--method", help="naive, lipsdp or lipsdp-layer"),
               input_shape: Optional[str] = typer.Option(None, "--input-shape", help="e.g. 1,28,28 (conv models)"),
               solver: str = typer.Option("ipm", "--solver", help="ipm, lbfgs, clarabel or scs"),
               device: Optional[str] = typer.Option(None, "--device"),
               json_out: Optional[Path] = typer.Option(None, "--json", help="write the result as JSON"),
               model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
               trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Certified global (region-free) Lipschitz constant of a Sequential chain: naive or LipSDP."""
    def go():
        import lipcert
        from ..errors import InvalidInput
        try:
            shape = tuple(int(v) for v in input_shape.split(",")) if input_shape else None
        except ValueError:
            raise InvalidInput(f"--input-shape must be comma-separated integers, got {input_shape!r}") from None
        net = _load(model, model_class, model_args, trust_pickle)
        g = lipcert.global_lipschitz(net, norm, method, input_shape=shape, solver=solver, device=device)
        t = Table(title="global Lipschitz bound")
        for c in ("method", "norm", "upper", "naive", "seconds"):
            t.add_column(c, justify="right")
        t.add_row(g.method, f"l{g.norm}", f"{g.value:.7g}", f"{g.details.get('naive', g.value):.7g}", f"{g.seconds:.2f}")
        out.print(t)
        if json_out is not None:
            json_out.write_text(json.dumps({"upper": g.value, "method": g.method, "norm": g.norm,
                                            "seconds": g.seconds, "details": g.details}, indent=2, default=str))
    _run(go, debug)


@app.command()
def radius(model: str, input: str = typer.Option(..., "--input", "-i"), label: int = typer.Option(..., "--label"),
           domain: Optional[str] = typer.Option(None, "--domain"), method: str = typer.Option("crown", "--method"),
           model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
           trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Largest l_inf radius with a certified unchanged prediction (vs the naive global radius)."""
    def go():
        import lipcert
        net = _load(model, model_class, model_args, trust_pickle)
        out.print(repr(lipcert.certified_radius(net, _input(input), label, domain=_domain(domain),
                                                method=method)))
    _run(go, debug)


@app.command()
def report(model: str, input: Optional[str] = typer.Option(None, "--input", "-i"),
           out_dir: Path = typer.Option(Path("lipcert-report"), "--out"),
           eps: Optional[str] = typer.Option(None, "--eps", help="comma-separated radii for the curve"),
           domain: Optional[str] = typer.Option(None, "--domain"),
           model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
           trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Write PNG plots and an HTML page: bound vs eps, per-output bars, Jacobian-width heat map.
    MODEL may also be a dataset results file (.jsonl/.parquet): then the distribution of bounds."""
    def go():
        from ..report import plots
        if model.endswith((".jsonl", ".parquet")):
            from ..dataset import read_records
            path = plots.distribution_plots(read_records(model), out_dir)
            out.print(f"wrote {path}")
            return
        from ..errors import InvalidInput
        if input is None:
            raise InvalidInput("--input is required for a model report")
        kw = {} if eps is None else {"eps_list": [float(v) for v in eps.split(",")]}
        net = _load(model, model_class, model_args, trust_pickle)
        cert, files = plots.write_report(net, _input(input), out_dir, domain=_domain(domain), **kw)
        out.print(repr(cert))
        for f in files:
            out.print(f"wrote {f}")
    _run(go, debug)


@app.command()
def check(model: str, input: Optional[str] = typer.Option(None, "--input", "-i"),
          model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
          trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """List every op of MODEL with its status (exit 3 when any is unsupported or refused)."""
    def go():
        from ..graph import capture, inspect
        from ..rules import RULES
        net = _load(model, model_class, model_args, trust_pickle)
        import torch
        x = _input(input) if input else None
        if x is None:
            from ..errors import InvalidInput
            raise InvalidInput("--input is required (an example input fixes the shapes)")
        from ..region import split_batch
        xb, _ = split_batch(net, x)
        example = xb[:1].to(torch.float32)
        statuses = inspect(net, example)
        t = Table(title=f"{model}: {len(statuses)} ops")
        for c in ("node", "op", "lipcert layer", "status", "why"):
            t.add_column(c)
        for s in statuses:
            colour = {"supported": "green", "refused": "red"}.get(s.status, "yellow")
            t.add_row(s.node, s.target, s.layer or "-", f"[{colour}]{s.status}[/{colour}]", s.reason)
        out.print(t)
        bad = [s for s in statuses if s.status != "supported"]
        if bad:
            err.print(f"[red]{len(bad)} op(s) not supported[/red]: " + ", ".join(f"{s.node} ({s.target})" for s in bad),
                      highlight=False, soft_wrap=True)
            raise typer.Exit(3)
        g = capture(net, example)
        t = Table(title=f"IR: {len(g.nodes)} nodes")
        for c in ("IR op", "count", "kind", "gradient rule"):
            t.add_column(c)
        for op, n in sorted(g.op_counts().items()):
            rule = RULES.get(op)
            kind = "input" if op == "input" else ("linear" if rule.linear else
                                                  "piecewise linear" if rule.piecewise_linear else "smooth")
            grad = "-" if op == "input" else ("transpose" if rule.linear else getattr(rule, "deriv", None) or "relu_grad")
            t.add_row(op, str(n), kind, str(grad))
        out.print(t)
    _run(go, debug)


@app.command()
def demo(debug: bool = typer.Option(False, "--debug"),
         out_dir: Path = typer.Option(Path("reports/demo"), "--out")):
    """Certify a zoo model on a few inputs, print a table and write a report."""
    def go():
        from ..demo import main
        main(report_dir=out_dir)
    _run(go, debug)


@app.command("certify-dataset")
def certify_dataset_cmd(model: str, inputs: str = typer.Option(..., "--inputs", help=".npy/.pt/.csv, one input per row"),
                        eps: str = typer.Option(..., "--eps", help="radius or comma-separated radii"),
                        out_path: Path = typer.Option(..., "--out", help="results file (.jsonl, or .parquet with a .journal.jsonl beside it), resumable"),
                        labels: Optional[str] = typer.Option(None, "--labels", help=".npy/.pt/.csv labels"),
                        method: str = typer.Option("crown", "--method"),
                        norm: str = typer.Option("inf", "--norm", help="input norm p of the constants: inf, 2 or 1; "
                                                                       "with --labels, radii are l_p radii"),
                        domain: Optional[str] = typer.Option(None, "--domain"),
                        workers: int = typer.Option(1, "--workers", help="local processes"),
                        ray: Optional[str] = typer.Option(None, "--ray", help="'local', 'auto' or a Ray address"),
                        batch_size: int = typer.Option(32, "--batch-size"),
                        model_class: Optional[str] = MODEL_CLASS, model_args: Optional[str] = MODEL_ARGS,
                        trust_pickle: bool = TRUST, debug: bool = typer.Option(False, "--debug")):
    """Certify every input at every radius; records stream to OUT; rerunning resumes."""
    def go():
        import lipcert
        from ..engine.norms import parse_norm
        p = parse_norm(norm)
        # the path goes to the run, not a module: each worker process loads it the same safe way
        s = lipcert.certify_dataset(model, inputs, [float(v) for v in eps.split(",")], method=method,
                                    norm=norm, labels=labels, out=out_path, workers=workers, cluster=ray,
                                    batch_size=batch_size, domain=_domain(domain), progress=True,
                                    model_class=model_class, model_args=model_args, trust_pickle=trust_pickle)
        t = Table(title=f"summary of {out_path}")
        for c in ("records", "new", "skipped", "errors", "mean upper", "median upper", "mean lower",
                  "median upper/lower", f"certified (l{p} radius > 0)", f"median l{p} radius", "seconds"):
            t.add_column(c, justify="right")
        t.add_row(str(s.records), str(s.done), str(s.skipped), str(s.errors), f"{s.mean_upper:.5g}",
                  f"{s.median_upper:.5g}", f"{s.mean_lower:.5g}", f"{s.median_ratio:.4g}",
                  "-" if s.certified is None else str(s.certified),
                  "-" if s.median_radius is None else f"{s.median_radius:.4g}", f"{s.seconds:.1f}")
        out.print(t)
        if s.certified is not None:
            out.print(f"radii are l{p} radii (the --norm of the Lipschitz constant), each within the l_inf ball "
                      f"of radius eps the bound holds on")
    _run(go, debug)


@zoo_app.command("list")
def zoo_list():
    """The zoo models (trained at first use, cached)."""
    from .. import zoo
    t = Table(title="lipcert zoo")
    for c in ("name", "input shape", "description"):
        t.add_column(c)
    for name, e in zoo.ZOO.items():
        t.add_row(name, str(e.input_shape()), e.description)
    out.print(t)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
