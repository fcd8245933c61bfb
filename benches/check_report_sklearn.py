"""Checks a report against scikit-learn, on the report's own predictions.parquet:
per-class precision/recall/F1/support and averages (to 4 decimals), the confusion matrix
(sum = N, diagonal = accuracy × N) and the hardest-samples entropies.

    python benches/check_report_sklearn.py results/lab4/report   (a python with scikit-learn + pyarrow)
"""
import csv, math, os, sys

import numpy as np
import pyarrow.parquet as pq
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def main():
    rep = sys.argv[1]
    t = pq.read_table(os.path.join(rep, "predictions.parquet")).to_pydict()
    y, p = np.array(t["label"]), np.array(t["pred"])
    probs = np.array(t["probs"])
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == p).all()
    ent = -(probs * np.log(np.clip(probs, 1e-300, None))).sum(1)
    assert np.allclose(ent, np.array(t["entropy"]), atol=1e-6)
    n = len(y)
    rows = {r["class"]: r for r in csv.DictReader(open(os.path.join(rep, "classification_report.csv")))}
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=range(10), zero_division=0)
    for i, c in enumerate(CLASSES):
        got = rows[c]
        for name, want in [("precision", pr[i]), ("recall", rc[i]), ("f1-score", f1[i])]:
            assert abs(float(got[name]) - round(want, 4)) < 5e-5, (c, name, got[name], want)
        assert int(got["support"]) == sup[i]
    for avg, key in [("macro", "macro avg"), ("weighted", "weighted avg")]:
        a = precision_recall_fscore_support(y, p, labels=range(10), average=avg, zero_division=0)
        for name, want in zip(["precision", "recall", "f1-score"], a[:3]):
            assert abs(float(rows[key][name]) - round(want, 4)) < 5e-5, (key, name)
    acc = accuracy_score(y, p)
    assert abs(float(rows["accuracy"]["f1-score"]) - round(acc, 4)) < 5e-5
    cm_csv = list(csv.reader(open(os.path.join(rep, "confusion_matrix.csv"))))
    assert cm_csv[0][1:] == CLASSES and [r[0] for r in cm_csv[1:]] == CLASSES
    cm = np.array([[int(v) for v in r[1:]] for r in cm_csv[1:]])
    assert (cm == confusion_matrix(y, p, labels=range(10))).all()
    assert cm.sum() == n and cm.trace() == round(acc * n)
    hardest = list(csv.DictReader(open(os.path.join(rep, "hardest.csv"))))
    top = np.argsort(-ent, kind="stable")[: len(hardest)]
    assert [int(h["index"]) for h in hardest] == list(top), "hardest samples differ"
    print(f"{rep}: {n} predictions; accuracy {acc:.4f}; per-class and averaged precision/recall/F1 equal "
          f"scikit-learn's to 4 decimals; confusion matrix sums to {cm.sum()} with diagonal {cm.trace()}; "
          f"the {len(hardest)} hardest samples match")


if __name__ == "__main__":
    main()
