"""thyro's study against the plain training loop a user would write, on the same folds.

Both train a ResNet-18 from random weights on the same ``splits.json`` (held-out test set and k folds,
patients and duplicate images grouped), score every fold's held-out images (out-of-fold) and the test
set (mean of the fold models), and are compared fold by fold.

* thyro: ``thyro study`` with its default recipe (or ``--set KEY=VALUE`` overrides to try others).
* the plain loop, written out here and sharing nothing with thyro: images decoded with Pillow on every
  access, the whole image squashed to S x S, torchvision transforms (horizontal flip, small affine),
  torchvision's ResNet-18, Adam at 1e-3, a class-weighted loss, a fixed number of epochs, no early
  stopping, no test-time augmentation.

Statistics (AUROC, DeLong intervals and the paired DeLong test) come from thyro.stats, which matches
R's pROC.

    python benchmarks/recipe.py --data ddti --size 128 --out .bench/recipe-ddti
    python benchmarks/recipe.py --data phantom --size 64 --out .bench/recipe-phantom

Everything is resumable (rerun the command); ``--set`` changes thyro's recipe in a new run folder
named by ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# data

def prepare_data(kind: str, out: Path, patients: int, seed: int) -> Path:
    """A manifest of DDTI (imported from ../shared/data/ddti) or of a phantom cohort."""
    manifest = out / "data" / "manifest.csv"
    if manifest.is_file():
        return manifest
    if kind == "ddti":
        src = REPO.parent / "shared" / "data" / "ddti"
        _thyro("data", "import", "ddti", str(src), "--out", str(manifest.parent))
    else:
        from thyro.data.phantom import generate_cohort

        generate_cohort(manifest.parent, n_patients=patients, size=128, seed=seed)
    return manifest


def _thyro(*args: str, env: dict | None = None) -> None:
    subprocess.run([sys.executable, "-m", "thyro", "--quiet", *args], check=True, cwd=REPO,
                   env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------------------
# the plain loop (nothing from thyro)

def plain_fold(manifest: Path, train_ids, val_ids, test_ids, labels, size: int, epochs: int, seed: int,
               external: dict | None = None):
    import torch
    import torchvision
    import torchvision.transforms as T
    from PIL import Image

    root = manifest.parent
    torch.manual_seed(seed)
    train_tf = T.Compose([T.Grayscale(1), T.Resize((size, size)), T.RandomHorizontalFlip(),
                          T.RandomAffine(10, translate=(0.05, 0.05), scale=(0.9, 1.1)), T.ToTensor()])
    eval_tf = T.Compose([T.Grayscale(1), T.Resize((size, size)), T.ToTensor()])

    class Images(torch.utils.data.Dataset):
        def __init__(self, ids, tf, base=root):
            self.ids, self.tf, self.base = list(ids), tf, base

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            with Image.open(self.base / self.ids[i]) as im:
                x = self.tf(im.convert("RGB"))
            return x.repeat(3, 1, 1), torch.tensor(float(labels.get(self.ids[i], 0)))

    model = torchvision.models.resnet18(num_classes=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    y = np.array([labels[i] for i in train_ids], dtype=float)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - y.sum()) / max(y.sum(), 1)))
    loader = torch.utils.data.DataLoader(Images(train_ids, train_tf), batch_size=32, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    t0, seen = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        for x, t in loader:
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), t)
            loss.backward()
            opt.step()
            seen += len(t)
    rate = seen / (time.perf_counter() - t0)

    @torch.no_grad()
    def score(ids, base=root):
        model.eval()
        out = []
        for x, _ in torch.utils.data.DataLoader(Images(ids, eval_tf, base), batch_size=64):
            out.append(torch.sigmoid(model(x).squeeze(1)))
        return torch.cat(out).tolist()

    res = {"val": dict(zip(val_ids, score(val_ids))), "test": dict(zip(test_ids, score(test_ids))), "img_s": rate}
    for name, (base, ids) in (external or {}).items():
        res[f"external:{name}"] = dict(zip(ids, score(ids, base)))
    return res


# ------------------------------------------------------------------------------------------------

def thyro_run(manifest: Path, splits: Path, out: Path, size: int, folds: int, sets: list[str], preprocess: dict,
              external: dict[str, Path] | None = None):
    import yaml

    cfg = {"name": out.name, "data": {"manifest": str(manifest), "splits": str(splits), "folds": folds,
                                      "external": [{"name": k, "manifest": str(v)} for k, v in (external or {}).items()]},
           "preprocess": {"size": size, **preprocess}, "arms": [{"name": "scratch", "weights": "none"}],
           "train": {"device": "cpu", "tensorboard": False}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.yaml").write_text(yaml.safe_dump(cfg))
    args = ["study", str(out / "study.yaml"), "--run-dir", str(out / "run"), "--no-report"]
    for s in sets:
        args += ["--set", s]
    t0 = time.perf_counter()
    _thyro(*args)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("ddti", "phantom"), default="phantom")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--patients", type=int, default=120, help="phantom patients")
    ap.add_argument("--plain-epochs", type=int, default=20)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="thyro override KEY=VALUE")
    ap.add_argument("--label", default="default", help="name of this thyro recipe (its run folder)")
    ap.add_argument("--no-plain", action="store_true", help="only run thyro (the plain loop's results are reused)")
    ap.add_argument("--out", type=Path, default=REPO / ".bench" / "recipe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--external", action="append", default=[], metavar="NAME=MANIFEST",
                    help="an external labelled set both recipes score (thyro: data.external)")
    args = ap.parse_args()

    from thyro.data.manifest import read_manifest
    from thyro.run import RunDir
    from thyro.stats import auroc, auroc_ci, delong_paired

    out = args.out.resolve()
    manifest = prepare_data(args.data, out, args.patients, args.seed)
    splits_path = out / "splits.json"
    if not splits_path.is_file():
        _thyro("data", "split", str(manifest), "--out", str(splits_path), "--folds", str(args.folds),
               "--seed", str(args.seed))
    splits = json.loads(splits_path.read_text())
    labelled = read_manifest(manifest).labelled().df
    labels = dict(zip(labelled["image"], labelled["label"].astype(int)))
    external, ext_labels = {}, {}
    for spec in args.external:
        name, _, path = spec.partition("=")
        em = read_manifest(Path(path).resolve()).labelled()
        external[name] = em.path
        ext_labels[name] = dict(zip(em.df["image"], em.df["label"].astype(int)))
    folds, test = splits["folds"], splits["test"]
    # the phantom's whole view is tiny around the nodule; thyro crops to the outline there (as the demo does)
    pre = {"roi_crop": True, "roi_margin": 0.3} if args.data == "phantom" else {}

    # plain loop, fold by fold (each fold's result is kept, so a rerun continues)
    plain = {}
    for k in range(len(folds)):
        path = out / "plain" / f"fold{k}-{args.size}px-{args.plain_epochs}ep.json"
        if not path.is_file():
            if args.no_plain:
                continue
            train_ids = [i for j, f in enumerate(folds) if j != k for i in f]
            ext = {n: (Path(external[n]).parent, list(ext_labels[n])) for n in external}
            res = plain_fold(manifest, train_ids, folds[k], test, labels, args.size, args.plain_epochs, args.seed + k,
                             external=ext)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res))
        plain[k] = json.loads(path.read_text())

    seconds = thyro_run(manifest, splits_path, out / f"thyro-{args.label}-{args.size}px", args.size, len(folds),
                        args.sets, pre, external)
    rd = RunDir(out / f"thyro-{args.label}-{args.size}px" / "run")
    preds = rd.read_predictions()
    results = rd.read_results()
    rows = []
    for k in range(len(folds)):
        t = preds.rows(arm="scratch", split="val", fold=k)
        p = plain.get(k)
        rows.append((k, auroc(t.label, t.probability),
                     auroc([labels[i] for i in p["val"]], list(p["val"].values())) if p else None))
    oof_t = preds.rows(arm="scratch", split="val")
    test_t = preds.rows(arm="scratch", split="test", ensemble=True).set_index("image")
    y_test = np.array([labels[i] for i in test])
    pt = test_t.loc[test, "probability"].to_numpy()
    print(f"\n## Recipe benchmark: {args.data}, {args.size} px, {len(folds)} folds, thyro recipe '{args.label}' "
          f"{' '.join(args.sets) or '(defaults)'}\n")
    print("| fold | thyro out-of-fold AUROC | plain loop out-of-fold AUROC |")
    print("| --- | ---: | ---: |")
    for k, a, b in rows:
        print(f"| {k} | {a:.3f} | {'-' if b is None else f'{b:.3f}'} |")
    line = f"| pooled | {auroc(oof_t.label, oof_t.probability):.3f} |"
    summary = {"data": args.data, "size": args.size, "label": args.label, "sets": args.sets,
               "thyro": {"oof": auroc(oof_t.label, oof_t.probability), "folds": [r[1] for r in rows],
                         "test": auroc(y_test, pt), "seconds": seconds,
                         "img_s": float(np.median([j.train_images_per_second for j in results.jobs.values()]))}}
    if len(plain) == len(folds):
        oof_p = {i: v for k in plain for i, v in plain[k]["val"].items()}
        ids = list(oof_p)
        plain_oof = auroc([labels[i] for i in ids], [oof_p[i] for i in ids])
        pp = np.mean([[plain[k]["test"][i] for i in test] for k in plain], axis=0)
        line += f" {plain_oof:.3f} |"
        summary["plain"] = {"oof": plain_oof, "folds": [r[2] for r in rows], "test": auroc(y_test, pp),
                            "img_s": float(np.median([plain[k]["img_s"] for k in plain]))}
        c = delong_paired(y_test, pt, pp)
        summary["test_paired"] = c.as_dict()
    print(line)
    print()
    ta = auroc_ci(y_test, pt)
    print(f"test set ({len(test)} images, {int(y_test.sum())} positive): thyro {ta.auroc:.3f} "
          f"[{ta.lower:.3f}, {ta.upper:.3f}]", end="")
    if "plain" in summary:
        pa = auroc_ci(y_test, pp)
        c = summary["test_paired"]
        print(f"; plain {pa.auroc:.3f} [{pa.lower:.3f}, {pa.upper:.3f}]; paired DeLong difference "
              f"{c['diff']:+.3f} [{c['lower']:+.3f}, {c['upper']:+.3f}], p = {c['p_value']:.3f}")
        print(f"out-of-fold difference thyro - plain: {summary['thyro']['oof'] - summary['plain']['oof']:+.3f}")
        print(f"images/s (median per fold; thyro: the whole job with per-epoch validation, plain: its training "
              f"loop only; benchmarks/train_speed.py compares the steps): thyro {summary['thyro']['img_s']:.0f}, "
              f"plain {summary['plain']['img_s']:.0f}")
    else:
        print()
    for name in external:
        y = ext_labels[name]
        t = preds.rows(arm="scratch", split=name, ensemble=True).set_index("image")
        ids = [i for i in y if i in t.index]
        yt, st = np.array([y[i] for i in ids]), t.loc[ids, "probability"].to_numpy()
        ta = auroc_ci(yt, st)
        print(f"external set {name} ({len(ids)} images, {int(yt.sum())} positive): thyro {ta.auroc:.3f} "
              f"[{ta.lower:.3f}, {ta.upper:.3f}]", end="")
        summary.setdefault("external", {})[name] = {"n": len(ids), "n_pos": int(yt.sum()), "thyro": ta.auroc}
        if len(plain) == len(folds) and all(f"external:{name}" in plain[k] for k in plain):
            pe = np.mean([[plain[k][f"external:{name}"][i] for i in ids] for k in plain], axis=0)
            pa, c = auroc_ci(yt, pe), delong_paired(yt, st, pe).as_dict()
            summary["external"][name].update(plain=pa.auroc, paired=c)
            print(f"; plain {pa.auroc:.3f} [{pa.lower:.3f}, {pa.upper:.3f}]; paired DeLong difference "
                  f"{c['diff']:+.3f}, p = {c['p_value']:.3f}", end="")
        print()
    print(f"thyro study: {seconds:.0f} s in all")
    (out / f"summary-{args.label}-{args.size}px.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
