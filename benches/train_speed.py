"""Training-speed benchmark: seconds per epoch and peak RSS of hypersweep's worker against
the notebook's PyTorch loop and PyTorch fed from memory, same machine, same run.

    bash scripts/bench.sh train          # sets up the Python torch it needs, then runs this

One epoch everywhere = train on all 60,000 images (worker: --validation 0) + evaluate the
10,000 test images; batch 64, SGD lr 0.1, seed 55, the same thread count for everyone.
Every implementation runs at every thread count of --threads, in rounds that alternate them
(--repeats rounds), so that other load on the machine spreads over all of them. Reports the
median epoch time over all epochs of all rounds and each process's peak RSS (wait4).
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile


def measure(cmd):
    """Runs cmd, returns (epoch records, peak RSS in MB)."""
    with tempfile.TemporaryFile(mode="w+") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
        out = proc.stdout.read()
        _, status, rusage = os.wait4(proc.pid, 0)
        if status != 0:
            errf.seek(0)
            sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{errf.read()}")
    recs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return recs, rusage.ru_maxrss / 1024


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


IMPLS = {
    "worker": "hypersweep worker (tch)",
    "baseline": "hypersweep worker, --baseline build",
    "memory": "PyTorch, tensors in memory",
    "notebook": "PyTorch, notebook loop (DataLoader)",
}


def command(a, here, impl, arch, hidden, dropout, epochs, threads):
    if impl in ("worker", "baseline"):
        return [a.worker if impl == "worker" else a.baseline, "train", "--arch", arch, "--hidden", str(hidden),
                "--dropout", dropout, "--lr", "0.1", "--epochs", str(epochs), "--validation", "0", "--threads",
                str(threads), "--format", "json", "--data-dir", a.data_dir]
    return [a.python, os.path.join(here, "pytorch_reference.py"), "--impl", impl, "--arch", arch, "--hidden",
            str(hidden), "--epochs", str(epochs), "--threads", str(threads), "--data-dir", a.data_dir]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--baseline", help="another worker binary (e.g. an older build), impl 'baseline'")
    p.add_argument("--python", required=True, help="a python with torch 2.11.0 + torchvision")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--threads", default="2", help="comma-separated thread counts, e.g. 1,2")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (one fewer for the CNN)")
    p.add_argument("--repeats", type=int, default=1, help="alternating rounds")
    p.add_argument("--models", default="ffv0:32,cnn:10",
                   help="arch:hidden[:dropout], comma-separated (PyTorch knows ffv0 and cnn)")
    p.add_argument("--impls", default="worker,memory,notebook")
    p.add_argument("--json-out")
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    for r in range(a.repeats):
        for model in a.models.split(","):
            arch, hidden, dropout = (model.split(":") + ["0"])[:3]
            epochs = max(1, a.epochs - 1) if arch == "cnn" else a.epochs
            name = f"{arch} h{hidden}" + (f" p{dropout}" if float(dropout) > 0 else "")
            for threads in [int(t) for t in a.threads.split(",")]:
                for impl in a.impls.split(","):
                    if impl in ("memory", "notebook") and arch not in ("ffv0", "cnn"):
                        continue  # the PyTorch reference has the notebook's ffv0 and cnn
                    recs, rss = measure(command(a, here, impl, arch, hidden, dropout, epochs, threads))
                    key = (name, threads, IMPLS[impl])
                    res = results.setdefault(key, dict(secs=[], rss=0.0, acc=None))
                    res["secs"] += [x["seconds"] for x in recs]
                    res["rss"] = max(res["rss"], rss)
                    res["acc"] = recs[-1]["test_acc"]
                    print(json.dumps(dict(round=r + 1, model=key[0], threads=threads, impl=key[2],
                                          seconds=[x["seconds"] for x in recs], peak_rss_mb=rss)),
                          file=sys.stderr, flush=True)
    rows = [dict(model=m, threads=t, impl=i, epochs=len(v["secs"]), median_s=statistics.median(v["secs"]),
                 min_s=min(v["secs"]), max_s=max(v["secs"]), peak_rss_mb=v["rss"], last_test_acc=v["acc"])
            for (m, t, i), v in results.items()]
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}; {a.repeats} alternating round(s)\n")
    print("| model | threads | implementation | s/epoch (median) | min–max | vs PyTorch from memory | peak RSS (MB) "
          "| test acc after run |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = next((x for x in rows if x["model"] == r["model"] and x["threads"] == r["threads"]
                    and x["impl"] == IMPLS["memory"]), None)
        ratio = f"{r['median_s'] / ref['median_s']:.2f}x" if ref else "-"
        print(f"| {r['model']} | {r['threads']} | {r['impl']} | {r['median_s']:.3f} | {r['min_s']:.2f}–{r['max_s']:.2f} "
              f"| {ratio} | {r['peak_rss_mb']:.0f} | {r['last_test_acc']:.4f} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
