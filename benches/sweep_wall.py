"""Wall time and coordinator peak RSS of one `coordinator run` (bash scripts/bench.sh lab4).

The coordinator's own peak RSS is its VmHWM, polled from /proc while it runs: wait4's
ru_maxrss would report the largest of its children (the local workers) instead.
"""
import argparse, os, subprocess, sys, threading, time


def poll_hwm(pid, out):
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        out[0] = max(out[0], int(line.split()[1]) / 1024)
        except OSError:
            return
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--sweep", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("extra", nargs="*")
    a = p.parse_args()
    cmd = [a.coordinator, "run", a.sweep, "--results", a.results, "--plain", *a.extra]
    t = time.perf_counter()
    with open(a.results + ".log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        hwm = [0.0]
        threading.Thread(target=poll_hwm, args=(proc.pid, hwm), daemon=True).start()
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    print(out)
    print("| command | wall time (s) | coordinator peak RSS (MB) | largest worker peak RSS (MB) | exit |")
    print("|---|---|---|---|---|")
    print(f"| `{' '.join(cmd)}` | {wall:.1f} | {hwm[0]:.0f} | {ru.ru_maxrss / 1024:.0f} | {os.waitstatus_to_exitcode(status)} |")
    print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
