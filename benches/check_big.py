"""`coordinator check` of a generated sweep of N trials: wall time and peak RSS."""
import argparse, os, subprocess, tempfile, time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--trials", type=int, default=100000)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = os.path.join(tmp, "big.toml")
        seeds = ", ".join(str(i) for i in range(a.trials // 100))
        lrs = ", ".join(str(0.001 * (i + 1)) for i in range(100))
        with open(sweep, "w") as f:
            f.write(f'name = "big"\n[[experiment]]\nname = "big"\narch = "ffv1"\nlr = [{lrs}]\nseed = [{seeds}]\n')
        t = time.perf_counter()
        proc = subprocess.Popen([a.coordinator, "check", sweep], stdout=subprocess.PIPE, text=True)
        lines = sum(1 for _ in proc.stdout)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        print("| trials | table lines | wall time (s) | peak RSS (MB) | exit |")
        print("|---|---|---|---|---|")
        print(f"| {a.trials} | {lines} | {wall:.2f} | {ru.ru_maxrss / 1024:.0f} | {os.waitstatus_to_exitcode(status)} |")


if __name__ == "__main__":
    main()
