"""Report sections for an evaluation run (``wbcgen evaluate --out DIR``)."""
from __future__ import annotations

import json
from pathlib import Path

from wbcgen.evaluate import paper
from wbcgen.report import html as H
from wbcgen.report.curves import classifier_curves


def _per_class_table(test: dict, classes, paper_col: dict | None = None, paper_name: str = "paper") -> str:
    header = ["class", "accuracy (recall)", "precision", "specificity", "F1", "support"]
    if paper_col:
        header.append(paper_name)
    rows = []
    for c in classes:
        m = test["per_class"][c]
        r = [c, H.pct(m["recall"]), H.pct(m["precision"]), H.pct(m["specificity"]), H.pct(m["f1"]), m["support"]]
        if paper_col:
            r.append(H.Raw(f"<span class=\"paper\">{H.pct(paper_col.get(c))}</span>"))
        rows.append(r)
    mac = test["macro"]
    r = ["macro", H.pct(mac["recall"]), H.pct(mac["precision"]), H.pct(mac["specificity"]), H.pct(mac["f1"]),
         test["n"]]
    if paper_col:
        r.append("")
    return H.table(header, rows + [r])


def _grids(run: Path, classes) -> str:
    parts = ["<h2>Real and synthetic cells, side by side</h2>"]
    any_grid = False
    for c in classes:
        real, syn = run / "grids" / f"real_{c}.png", run / "grids" / f"synthetic_{c}.png"
        figs = [H.figure(H.img_file(p, f"{kind} {c}"), f"{kind} {c}") for kind, p in (("real", real),
                                                                                     ("synthetic", syn)) if p.is_file()]
        if figs:
            any_grid = True
            parts.append(f"<h3>{H.esc(c)}</h3><div class=\"pair\">{''.join(figs)}</div>")
    return "".join(parts) if any_grid else ""


def _distances(d: dict) -> str:
    out = ["<h2>Distribution distances (lower is better)</h2>",
           "<p>FD = Fréchet distance, KID = kernel distance. <b>floor</b>: one half of the real images against the "
           "other half — what a perfect generator would score; <b>matched</b>: the same real half against as many "
           "synthetic images, the number to compare with the floor. Intervals: "
           f"{H.esc(next(iter(d['domain']['per_class'].values())).get('interval', ''))}. "
           f"{H.esc(d.get('preferred_when_small', ''))}.</p>"]
    for space in ("domain", "inception"):
        block = d.get(space) or {}
        title = "W-Net feature space (domain)" if space == "domain" else "Inception-v3 (FID/KID)"
        out.append(f"<h3>{title}</h3>")
        if not block.get("per_class"):
            out.append(H.note(block.get("note", "not computed")))
            continue
        out.append(f"<p class=\"meta\">{H.esc(block.get('feature_extractor', ''))}</p>")
        rows = []
        for c, r in block["per_class"].items():
            if r.get("fd") is None:
                rows.append([c, f"{r['n_real']}/{r['n_synthetic']}", "–", "–", "–", "–", "–", "–"])
                continue
            fl, ma = r.get("floor") or {}, r.get("matched") or {}

            def ci(x):
                return "–" if not x else f"{H.num(x['mean'])} [{H.num(x['ci95'][0])}, {H.num(x['ci95'][1])}]"

            rows.append([c, f"{r['n_real']}/{r['n_synthetic']}", H.num(r["fd"]), ci(ma.get("fd")), ci(fl.get("fd")),
                         f"{H.num(r['kid']['mean'])} ± {H.num(r['kid']['std'])}", ci(ma.get("kid")), ci(fl.get("kid"))])
        out.append(H.table(["class", "n real/syn", "FD", "FD matched", "FD floor", "KID", "KID matched",
                            "KID floor"], rows))
        out.append(_prdc(block["per_class"]))
        if block.get("torchmetrics_fid_overall") is not None:
            out.append(f"<p>torchmetrics' own FID (overall): {H.num(block['torchmetrics_fid_overall'])}</p>")
        if space == "inception":
            out.append("<p class=\"meta\">Protocol: " + H.esc(json.dumps(block.get("protocol", {}))) + "</p>")
    return "".join(out)


def _prdc(per_class: dict) -> str:
    """Fidelity (precision, density) and diversity (recall, coverage) per class, matched vs floor."""
    rows = [[c] + [f"{H.num(p['matched'][m]['mean'], 2)} / {H.num(p['floor'][m]['mean'], 2)}"
                   for m in ("precision", "density", "recall", "coverage")]
            for c, r in per_class.items() if (p := r.get("prdc")) and p.get("floor")]
    if not rows:
        return ""
    return ("<p>Fidelity and diversity apart (k-nearest-neighbour manifolds, k = 5; synthetic at matched size / "
            "real floor): <b>precision</b> and <b>density</b> — are the synthetic cells where real cells are; "
            "<b>recall</b> and <b>coverage</b> — do they reach all the real cells (low coverage with high precision: "
            "a generator that draws a few prototypes).</p>"
            + H.table(["class", "precision", "density", "recall", "coverage"], rows))


def _cosine(cos: dict, classes) -> str:
    rows = []
    for c in classes:
        px, ft = cos["pixel"]["per_class"][c], cos["features"]["per_class"][c]
        pdiff = paper.TABLE7["per_class"][c]
        rows.append([c, H.num(px["real_real"]), H.num(px["real_synthetic"]), f"{H.num(px['difference_pct'], 2)}%",
                     H.num(ft["real_real"]), H.num(ft["real_synthetic"]), f"{H.num(ft['difference_pct'], 2)}%",
                     H.Raw(f"<span class=\"paper\">{pdiff:.0f}%</span>")])
    rows.append(["mean", "", "", f"{H.num(cos['pixel']['mean_difference_pct'], 2)}%", "", "",
                 f"{H.num(cos['features']['mean_difference_pct'], 2)}%", H.Raw("<span class=\"paper\">5%</span>")])
    return ("<h2>Check 3 — cosine similarity (paper Table 7)</h2>"
            f"<p>{H.esc(cos['definition'])}. rr = real–real, rs = real–synthetic.</p>"
            + H.table(["class", "pixel rr", "pixel rs", "pixel diff", "feature rr", "feature rs", "feature diff",
                       "paper diff"], rows))


def _dose(dr: dict, classes) -> str:
    series = {c: [(r["ratio"], r["per_class_accuracy"][c]) for r in dr["rows"]] for c in classes}
    series["overall"] = [(r["ratio"], r["balanced_accuracy"]) for r in dr["rows"]]
    chart = H.svg_lines(series, title="Real-test accuracy vs synthetic:real ratio", xlabel="synthetic : real per class",
                        ylabel="accuracy (recall)", ylim=(0.0, 1.0), width=760, height=340)
    rows = [[f"{r['ratio']:g}"] + [H.pct(r["per_class_accuracy"][c]) for c in classes]
            + [H.pct(r["balanced_accuracy"]), sum(r["n_train_real_per_class"].values()),
               sum(r["n_train_synthetic_per_class"].values()), r.get("epochs", "")] for r in dr["rows"]]
    return (f"<h2>Dose-response (real images per class: {H.esc(dr['real_per_class'] or 'all')})</h2>"
            f"<p>{H.esc(dr['definition'])}.</p>{chart}"
            + H.table(["ratio"] + list(classes) + ["balanced acc.", "real train", "synthetic train", "epochs"], rows))


def _review(run: Path, rv: dict, classes) -> str:
    out = ["<h2>Check 4 — blind expert review (paper Table 8: 95%)</h2>", f"<p>{H.esc(rv['how'])}</p>"]
    score = run / "review-kit" / "score.json"
    if score.is_file():
        s = json.loads(score.read_text())
        out.append(f"<p>Reviewer accuracy {H.pct(s['accuracy'])} (real {H.pct(s['accuracy_real'])}, synthetic "
                   f"{H.pct(s['accuracy_synthetic'])}); real/synthetic told apart in "
                   f"{H.pct(s['source_detection']['accuracy'])} of guesses (chance 50%).</p>")
        out.append(H.confusion(s["confusion_matrix"], classes, "reviewer", paper.TABLE8["confusion_matrix"]))
    else:
        out.append(H.note("No answers scored yet (review-kit/score.json appears after "
                          "`wbcgen review-score ... --out review-kit/score.json`)."))
    return "".join(out)


def sections(run: Path, res: dict) -> list[str]:
    classes = res["classes"]
    test = res.get("test")
    body = [leakage_banner(res.get("leakage"))]
    kpis = [("train on", res["train_on"]), ("model", res["model"]),
            ("real-test accuracy", H.pct(test["accuracy"]) if test else "–"),
            ("balanced accuracy", H.pct(test["balanced_accuracy"]) if test else "–"),
            ("training images", f"{res['n_train_real']} real + {res['n_train_synthetic']} synthetic")]
    body.append("".join(f"<span class=\"kpi\">{H.esc(k)}<b>{H.esc(v)}</b></span>" for k, v in kpis))
    for n in res.get("notes", []):
        body.append(H.note(n))
    body.append(_grids(run, classes))
    ttl = {"synthetic": "Train on synthetic, test on real (paper Table 6)", "real": "Train and test on real",
           "mixed": f"Real + synthetic (ratio {res.get('mix_ratio')}) training, tested on real"}[res["train_on"]]
    body.append(f"<h2>{H.esc(ttl)}</h2>")
    if test:
        pcol = paper.table6_per_class() if res["train_on"] == "synthetic" else None
        body.append(_per_class_table(test, classes, pcol, "paper Table 6"))
        body.append(H.confusion(test["confusion_matrix"], classes, "ours",
                                paper.TABLE6["confusion_matrix"] if res["train_on"] == "synthetic" else None))
    if res.get("judges"):
        body.append(_judges(res["judges"], classes))
    body.append(classifier_curves(run / "train" / "log.jsonl", "Regime training curves"))
    ch = res.get("checks", {})
    if "classify_synthetic" in ch:
        cs = ch["classify_synthetic"]
        body.append("<h2>Check 1 — real-trained W-Net classifies the synthetic set (paper Table 5: 100%)</h2>")
        body.append(_per_class_table(cs["test"], classes, paper.TABLE5["per_class_accuracy"], "paper Table 5"))
        body.append(H.confusion(cs["test"]["confusion_matrix"], classes, "ours", paper.TABLE5["confusion_matrix"]))
        ref = ch.get("reference_classifier", {})
        if ref.get("heldout_test"):
            body.append(f"<p>The reference W-Net scores {H.pct(ref['heldout_test']['accuracy'])} on the "
                        f"{ref.get('n_heldout')} real images it did not train on. {H.esc(ref.get('note', ''))}</p>")
    if "tstr" in ch and not ch["tstr"].get("same_as_regime"):
        t6 = ch["tstr"]["test"]
        body.append("<h2>Check 2 — train on synthetic, test on real (paper Table 6: 95%)</h2>")
        body.append(_per_class_table(t6, classes, paper.table6_per_class(), "paper Table 6"))
        body.append(H.confusion(t6["confusion_matrix"], classes, "ours", paper.TABLE6["confusion_matrix"]))
    if "cosine" in ch:
        body.append(_cosine(ch["cosine"], classes))
    if "distances" in ch:
        body.append(_distances(ch["distances"]))
    if "review" in ch:
        body.append(_review(run, ch["review"], classes))
    if res.get("dose_response"):
        body.append(_dose(res["dose_response"], classes))
    body.append(_provenance(res))
    return body


def _judges(rows: list[dict], classes) -> str:
    """Every --model trained on the same splits, side by side."""
    body = [[r["model"], H.pct(r.get("accuracy")), H.pct(r.get("balanced_accuracy")), H.pct(r.get("macro_f1"))]
            + [H.pct((r.get("per_class_accuracy") or {}).get(c)) for c in classes] for r in rows]
    return ("<h3>Every judge, same training and test images</h3>"
            + H.table(["model", "accuracy", "balanced acc.", "macro F1"] + list(classes), body))


def leakage_banner(leak) -> str:
    """Red banner when test images were in a generator's/classifier's training data
    (``--allow-overlap``); a note when that could not be checked."""
    if leak == "unknown":
        return H.note("Leakage unknown: the generators' (or classifier's) training images are not recorded, so "
                      "these test images may have been seen in training.")
    if not isinstance(leak, dict):
        return ""
    n = int(leak.get("n_overlap") or 0) + int((leak.get("classifier") or {}).get("n_overlap") or 0) \
        if isinstance(leak.get("classifier"), dict) else int(leak.get("n_overlap") or 0)
    if not n:
        return ""
    per = ", ".join(f"{c} {k}" for c, k in (leak.get("per_class") or {}).items())
    return H.banner(f"LEAKAGE: {n} test/validation image(s) were in the training data of the generators"
                    f"{' or the classifier' if isinstance(leak.get('classifier'), dict) else ''}"
                    f"{f' ({per})' if per else ''}. These numbers overstate how well the synthetic cells work "
                    "(run with --allow-overlap); re-run with a split: wbcgen data split → train-gan --split → "
                    "evaluate --split.")


def _provenance(res: dict) -> str:
    comp = res.get("compute", {})
    rows = [["generator sha256", json.dumps(res.get("generator_sha256") or {})],
            ["real", json.dumps((res.get("sources") or {}).get("real", {}).get("counts"))],
            ["synthetic", json.dumps(((res.get("sources") or {}).get("synthetic") or {}).get("counts"))],
            ["compute", f"{comp.get('device')} · {comp.get('torch_threads')} threads · {comp.get('cpu_count')} CPUs"],
            ["wall time (s)", json.dumps({k: round(v, 1) for k, v in (comp.get("wall_seconds") or {}).items()})],
            ["paper", paper.SOURCE]]
    return "<h2>Provenance</h2>" + H.table(["", ""], rows, cls="kv")
