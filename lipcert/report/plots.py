"""Plots of certificates (matplotlib, written as PNG files) and an HTML page that shows them."""
from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


from ..lipschitz.local import local_lipschitz  # noqa: E402

COLORS = {"alpha-crown": "tab:blue", "crown": "tab:orange", "recurjac": "tab:green", "ibp": "tab:red",
          "naive": "tab:gray", "bab": "tab:purple"}


def eps_curve(model, x0, eps_list, methods, path, domain=None, norm="inf"):
    """Upper bound of each method and the best lower bound against the radius."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lows = []
    rows = []
    for m in methods:
        ups = []
        for e in eps_list:
            c = local_lipschitz(model, x0, e, method=m, domain=domain, norm=norm, attack_steps=10)
            ups.append(c.upper)
            lows.append((e, c.lower))
            rows.append((m, e, c.upper, c.lower))
        ax.plot(eps_list, ups, "o-", color=COLORS.get(m), label=f"upper: {m}")
    best = {}
    for e, lo in lows:
        best[e] = max(best.get(e, 0.0), lo)
    ax.plot(eps_list, [best[e] for e in eps_list], "k--", marker="x", label="lower (witness pairs)")
    ax.set_xlabel("radius eps (l_inf ball)")
    ax.set_ylabel(f"local Lipschitz constant (l{norm} -> l_inf)")
    ax.set_yscale("log")
    ax.set_title("certified interval vs radius")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return rows


def per_output_bars(cert, path):
    """Per-output upper and lower bounds as grouped bars."""
    up = cert.per_output_upper.cpu().numpy()
    lo = cert.per_output_lower.cpu().numpy()
    k = range(len(up))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.bar([i - 0.2 for i in k], up, width=0.4, label="upper (proved)", color="tab:blue")
    ax.bar([i + 0.2 for i in k], lo, width=0.4, label="lower (witness)", color="tab:orange")
    ax.set_xticks(list(k))
    ax.set_xlabel("output")
    ax.set_ylabel("local Lipschitz constant")
    ax.set_title(f"per output, {cert.method}, eps={cert.eps:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def jacobian_heatmap(jl, ju, path, image_shape=None, outputs=None):
    """Width of the elementwise Jacobian bounds per input, one panel per output (image inputs)."""
    w = (ju - jl).detach().cpu()
    K = w.shape[0]
    shape = image_shape or _as_image(w.shape[1:])
    sel = list(range(K)) if outputs is None else list(outputs)
    cols = min(5, len(sel))
    rows = math.ceil(len(sel) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    vmax = float(w.max())
    for a in axes.flat:
        a.axis("off")
    for a, k in zip(axes.flat, sel):
        im = a.imshow(w[k].reshape(shape), cmap="viridis", vmin=0, vmax=vmax)
        a.set_title(f"output {k}", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="J upper - J lower")
    fig.suptitle("width of certified Jacobian bounds per input", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _as_image(shape):
    n = 1
    for s in shape:
        n *= s
    if len(shape) == 3:
        return shape[1], shape[2] * shape[0]
    side = int(round(math.sqrt(n)))
    return (side, side) if side * side == n else (1, n)


def write_report(model, x0, out_dir, *, eps_list=(0.001, 0.005, 0.01, 0.02, 0.05), methods=("alpha-crown", "crown",
                 "recurjac", "ibp"), eps=None, domain=None, norm="inf", title="lipcert report"):
    """Write ``eps_curve.png``, ``per_output.png``, ``jacobian_width.png`` and ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eps = eps if eps is not None else eps_list[len(eps_list) // 2]
    rows = eps_curve(model, x0, list(eps_list), methods, out / "eps_curve.png", domain, norm)
    cert = local_lipschitz(model, x0, eps, domain=domain, norm=norm)
    per_output_bars(cert, out / "per_output.png")
    files = ["eps_curve.png", "per_output.png"]
    if cert.jacobian_lower is not None:
        jacobian_heatmap(cert.jacobian_lower, cert.jacobian_upper, out / "jacobian_width.png")
        files.append("jacobian_width.png")
    table = "".join(f"<tr><td>{html.escape(m)}</td><td>{e:g}</td><td>{u:.5g}</td><td>{lo:.5g}</td>"
                    f"<td>{(u / lo if lo > 0 else float('inf')):.4g}</td></tr>" for m, e, u, lo in rows)
    imgs = "".join(f'<figure><img src="{f}"><figcaption>{f}</figcaption></figure>' for f in files)
    (out / "index.html").write_text(
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(repr(cert))}</p>"
        f"<table border=1 cellpadding=4><tr><th>method</th><th>eps</th><th>upper</th><th>lower</th>"
        f"<th>upper/lower</th></tr>{table}</table>{imgs}</body></html>")
    return cert, [out / f for f in files] + [out / "index.html"]


def distribution_plots(records: list, out_dir):
    """Histograms of upper bounds, gaps and (when present) certified radii of dataset records."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = [r for r in records if r.get("error") in (None, "")]
    ups = [r["upper"] for r in ok]
    ratios = [r["upper"] / r["lower"] for r in ok if r["lower"] > 0]
    radii = [r["radius"] for r in ok if r.get("radius") is not None]
    panels = [(ups, "upper bound"), (ratios, "upper / lower")] + ([(radii, "certified radius")] if radii else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for a, (vals, name) in zip(axes[0], panels):
        a.hist(vals, bins=30, color="tab:blue")
        a.set_xlabel(name)
        a.set_ylabel("count")
    fig.suptitle(f"{len(ok)} certified records")
    fig.tight_layout()
    fig.savefig(out / "distribution.png", dpi=120)
    plt.close(fig)
    return out / "distribution.png"
