"""Wall time and coordinator peak RSS of one `coordinator run` (bash scripts/bench.sh lab4)."""
import argparse, os, subprocess, sys, time


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
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    print(out)
    print(f"| command | wall time (s) | coordinator peak RSS (MB) | exit |")
    print(f"|---|---|---|---|")
    print(f"| `{' '.join(cmd)}` | {wall:.1f} | {ru.ru_maxrss / 1024:.0f} | {os.waitstatus_to_exitcode(status)} |")
    print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
