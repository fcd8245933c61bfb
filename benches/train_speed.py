"""Training-speed benchmark: seconds per epoch and peak RSS of hypersweep's worker against
the notebook's PyTorch loop and PyTorch fed from memory, same machine, same run.

    bash scripts/bench.sh train          # sets up the Python torch it needs, then runs this

One epoch everywhere = train on all 60,000 images (worker: --validation 0) + evaluate the
10,000 test images; batch 64, SGD lr 0.1, seed 55, the same thread count for everyone.
Reports the median epoch time over --epochs epochs and each process's peak RSS (wait4).
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--python", required=True, help="a python with torch 2.11.0 + torchvision")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--json-out")
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    rows = []
    for arch, hidden in [("ffv0", 32), ("cnn", 10)]:
        epochs = a.epochs if arch == "ffv0" else max(1, a.epochs - 1)
        variants = {
            "hypersweep worker (tch)": [a.worker, "train", "--arch", arch, "--hidden", str(hidden), "--lr", "0.1",
                                        "--epochs", str(epochs), "--validation", "0", "--threads", str(a.threads),
                                        "--format", "json", "--data-dir", a.data_dir],
            "PyTorch, tensors in memory": [a.python, os.path.join(here, "pytorch_reference.py"), "--impl", "memory",
                                           "--arch", arch, "--hidden", str(hidden), "--epochs", str(epochs),
                                           "--threads", str(a.threads), "--data-dir", a.data_dir],
            "PyTorch, notebook loop (DataLoader)": [a.python, os.path.join(here, "pytorch_reference.py"), "--impl",
                                                    "notebook", "--arch", arch, "--hidden", str(hidden), "--epochs",
                                                    str(epochs), "--threads", str(a.threads), "--data-dir", a.data_dir],
        }
        for name, cmd in variants.items():
            recs, rss = measure(cmd)
            secs = [r["seconds"] for r in recs]
            row = dict(model=f"{arch} h{hidden}", impl=name, epochs=len(secs), median_s=statistics.median(secs),
                       min_s=min(secs), peak_rss_mb=rss, last_test_acc=recs[-1]["test_acc"])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}; threads per process: {a.threads}\n")
    print("| model | implementation | s/epoch (median) | vs worker | peak RSS (MB) | test acc after run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["impl"].startswith("hypersweep"))
        print(f"| {r['model']} | {r['impl']} | {r['median_s']:.3f} | {r['median_s'] / base['median_s']:.1f}x "
              f"| {r['peak_rss_mb']:.0f} | {r['last_test_acc']:.4f} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
