"""Orchestration overhead: N one-epoch trials of a no-op trainer through the real gRPC path
(coordinator process, W local `worker join --noop` processes on loopback, Parquet written).

    python3 benches/overhead.py --coordinator target/release/coordinator --trials 10000 --workers 8
"""
import argparse, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep_wall import poll_hwm  # noqa: E402
import threading  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--trials", type=int, default=10000)
    p.add_argument("--workers", type=int, default=8)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "overhead.toml")
        seeds = ", ".join(str(i) for i in range(a.trials))
        with open(sweep, "w") as f:
            f.write(f'name = "overhead"\n[[experiment]]\nname = "noop"\narch = "ffv0"\nepochs = 1\nseed = [{seeds}]\n')
        results = os.path.join(tmp, "results")
        cmd = [a.coordinator, "run", sweep, "--results", results, "--local-workers", str(a.workers),
               "--threads", "1", "--plain", "--no-report", "--worker-arg=--noop"]
        t = time.perf_counter()
        with open(os.path.join(tmp, "log"), "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                    env={**os.environ, "RUST_LOG": "warn"})
            hwm = [0.0]
            threading.Thread(target=poll_hwm, args=(proc.pid, hwm), daemon=True).start()
            out = proc.stdout.read()
            _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        print(out.strip())
        print(f"| trials | workers | wall time (s) | per trial (ms) | coordinator peak RSS (MB) | exit |")
        print(f"|---|---|---|---|---|---|")
        print(f"| {a.trials} | {a.workers} | {wall:.2f} | {1000 * wall / a.trials:.2f} | {hwm[0]:.0f} | {os.waitstatus_to_exitcode(status)} |")
        print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
