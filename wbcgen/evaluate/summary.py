"""results.md for an evaluation run: the headline numbers beside the paper's."""
from __future__ import annotations

from wbcgen.evaluate import paper


def _p(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}g}" if abs(v) < 1e-2 else f"{v:.{digits}f}"


def results_markdown(res: dict) -> str:
    classes = res["classes"]
    test = res["test"]
    L = [f"# wbcgen evaluate — train on {res['train_on']}, model {res['model']}", ""]
    L.append(f"Training images (first split): {res['n_train_real']} real + {res['n_train_synthetic']} synthetic; "
             f"protocol {res['protocol']['kind']} ({res['protocol'].get('folds', 1)} split(s)).")
    if res.get("notes"):
        L += [""] + [f"* note: {n}" for n in res["notes"]]
    if test:
        L += ["", f"**Real-test accuracy {_p(test['accuracy'])}**, balanced {_p(test['balanced_accuracy'])}, "
                  f"macro precision {_p(test['macro']['precision'])}, recall {_p(test['macro']['recall'])}, "
                  f"F1 {_p(test['macro']['f1'])} on {test['n']} real images.", ""]
        if res["train_on"] == "synthetic":
            L.append("Paper (Table 6, TSTR): accuracy 95%, precision 93%, recall 95%, F1 94%.")
            L.append("")
        L += ["| class | recall (= per-class accuracy) | precision | F1 | support |", "|---|---|---|---|---|"]
        for c in classes:
            m = test["per_class"][c]
            L.append(f"| {c} | {_p(m['recall'])} | {_p(m['precision'])} | {_p(m['f1'])} | {m['support']} |")
    if res.get("judges"):
        L += ["", "## Every judge on the same images", "", "| model | accuracy | balanced acc. | macro F1 |",
              "|---|---|---|---|"]
        L += [f"| {j['model']} | {_p(j['accuracy'])} | {_p(j['balanced_accuracy'])} | {_p(j['macro_f1'])} |"
              for j in res["judges"]]
    leak = res.get("leakage")
    if isinstance(leak, dict) and leak.get("n_overlap"):
        L[1:1] = ["", f"**LEAKAGE: {leak['n_overlap']} test/validation image(s) were in the generators' training "
                      "data (--allow-overlap); these numbers overstate how well the synthetic cells work.**"]
    ch = res.get("checks", {})
    if "classify_synthetic" in ch:
        cs = ch["classify_synthetic"]
        L += ["", "## Check 1 — real-trained W-Net classifies the synthetic set (paper Table 5: 100%)", "",
              f"Accuracy {_p(cs['test']['accuracy'])} on {cs['n']} synthetic images.", "",
              "| class | ours | paper |", "|---|---|---|"]
        L += [f"| {c} | {_p(v)} | 100.0% |" for c, v in cs["per_class_accuracy"].items()]
    if "tstr" in ch and ch["tstr"].get("test"):
        t6 = ch["tstr"]["test"]
        pc = paper.table6_per_class()
        L += ["", "## Check 2 — train on synthetic, test on real (paper Table 6: 95%)", "",
              f"Accuracy {_p(t6['accuracy'])}, macro precision {_p(t6['macro']['precision'])}, "
              f"recall {_p(t6['macro']['recall'])}, F1 {_p(t6['macro']['f1'])}.", "",
              "| class | ours | paper |", "|---|---|---|"]
        L += [f"| {c} | {_p(t6['per_class'][c]['recall'])} | {_p(pc[c])} |" for c in classes]
    if "cosine" in ch:
        cos = ch["cosine"]
        L += ["", "## Check 3 — cosine similarity, difference real–real vs real–synthetic (paper Table 7)", "",
              "| class | pixel rr | pixel rs | pixel diff | feature rr | feature rs | feature diff | paper diff |",
              "|---|---|---|---|---|---|---|---|"]
        for c in classes:
            px, ft = cos["pixel"]["per_class"][c], cos["features"]["per_class"][c]
            L.append(f"| {c} | {_f(px['real_real'])} | {_f(px['real_synthetic'])} | {_f(px['difference_pct'], 2)}% | "
                     f"{_f(ft['real_real'])} | {_f(ft['real_synthetic'])} | {_f(ft['difference_pct'], 2)}% | "
                     f"{paper.TABLE7['per_class'][c]:.0f}% |")
        L.append(f"| mean | | | {_f(cos['pixel']['mean_difference_pct'], 2)}% | | | "
                 f"{_f(cos['features']['mean_difference_pct'], 2)}% | 5% |")
    if "distances" in ch:
        d = ch["distances"]
        L += ["", "## Distribution distances (lower is better; floor = real half vs real half)", ""]
        for space in ("domain", "inception"):
            block = d.get(space, {})
            if not block.get("per_class"):
                if block.get("note"):
                    L += [f"*{space}*: {block['note']}", ""]
                continue
            L += [f"*{space}* — {block.get('feature_extractor', 'Inception-v3 pool (2048-d)')}", "",
                  "| class | n real/syn | FD | FD matched | FD floor | KID | KID matched | KID floor |",
                  "|---|---|---|---|---|---|---|---|"]
            for c, r in block["per_class"].items():
                if r.get("fd") is None:
                    L.append(f"| {c} | {r['n_real']}/{r['n_synthetic']} | – | – | – | – | – | – |")
                    continue
                fl, ma = r.get("floor") or {}, r.get("matched") or {}
                L.append(f"| {c} | {r['n_real']}/{r['n_synthetic']} | {_f(r['fd'])} | "
                         f"{_f(ma.get('fd', {}).get('mean'))} | {_f(fl.get('fd', {}).get('mean'))} | "
                         f"{_f(r['kid']['mean'])} | {_f(ma.get('kid', {}).get('mean'))} | "
                         f"{_f(fl.get('kid', {}).get('mean'))} |")
            L.append("")
    if "review" in ch:
        L += ["", "## Check 4 — blind review kit", "", ch["review"]["how"]]
    dr = res.get("dose_response")
    if dr:
        L += ["", f"## Dose-response (real per class: {dr['real_per_class'] or 'all'})", "",
              "| ratio | " + " | ".join(classes) + " | balanced acc. |", "|---|" + "---|" * (len(classes) + 1)]
        for row in dr["rows"]:
            L.append(f"| {row['ratio']:g} | " + " | ".join(_p(row["per_class_accuracy"][c]) for c in classes)
                     + f" | {_p(row['balanced_accuracy'])} |")
    comp = res.get("compute", {})
    if comp:
        L += ["", f"Compute: {comp.get('device')} · {comp.get('torch_threads')} torch threads · "
                  f"{comp.get('cpu_count')} CPUs · total {comp['wall_seconds'].get('total', 0):.0f} s."]
    return "\n".join(L) + "\n"


def headline(res: dict) -> dict:
    """Top-level headline numbers (also what Hub cards read): ``tstr_accuracy``; ``fid``/``kid``
    (Inception-v3, ``None`` when its weights are absent); ``domain_fd``/``domain_kid`` (W-Net
    features), each ``{"overall", "floor", "matched", "per_class"}``."""
    ch = res.get("checks", {})
    out: dict = {"tstr_accuracy": None, "fid": None, "kid": None, "domain_fd": None, "domain_kid": None}
    if res.get("train_on") == "synthetic" and res.get("test"):
        out["tstr_accuracy"] = res["test"]["accuracy"]
    elif ch.get("tstr", {}).get("test"):
        out["tstr_accuracy"] = ch["tstr"]["test"]["accuracy"]
    d = ch.get("distances") or {}

    def pick(per: dict, key: str) -> dict:
        def val(r):
            v = r.get(key)
            return v["mean"] if isinstance(v, dict) else v

        def side(r, which):
            s = (r.get(which) or {}).get(key)
            return s["mean"] if s else None

        o = per.get("overall", {})
        block = {"overall": val(o), "floor": side(o, "floor"), "matched": side(o, "matched"),
                 "macro": (o.get("macro") or {}).get(key), "overall_definition": o.get("definition"),
                 "per_class": {c: val(r) for c, r in per.items() if c != "overall"}}
        if key == "kid" and isinstance(o.get("kid"), dict):
            block["std"] = o["kid"]["std"]
        return block

    inc = (d.get("inception") or {}).get("per_class")
    if inc:
        out["fid"], out["kid"] = pick(inc, "fd"), pick(inc, "kid")
        feats = "Inception-v3 pool3 (2048-d), torchmetrics/torch-fidelity protocol"
        out["fid"]["features"] = out["kid"]["features"] = feats
    dom = (d.get("domain") or {}).get("per_class")
    if dom:
        out["domain_fd"], out["domain_kid"] = pick(dom, "fd"), pick(dom, "kid")
    return out
