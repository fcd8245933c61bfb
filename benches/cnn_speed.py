"""TinyVGG training steps inside libtorch (worker/examples/cnn_variants.rs) against PyTorch,
side by side: every variant at every thread count, alternating, repeated.

    bash scripts/bench.sh cnn          # builds the example, sets up Python torch, runs this

Each run is its own process: --steps training steps (batch 64, SGD lr 0.1, random data) after
--warmup, scaled to a 938-step epoch, then 10 evaluation batches of 1000. PyTorch runs the
notebook's CNN_v0 (benches/pytorch_reference.py) in the notebook's NCHW layout ("from
memory": tensors already there) and, for reference, with model and input in channels_last.
Prints the median over --repeats rounds; the rounds alternate every variant so that other
load on the machine spreads over all of them.
"""
import argparse, json, statistics, subprocess, sys, time


def pytorch_child(a):
    import torch
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from pytorch_reference import CNN_v0

    torch.set_num_threads(a.threads)
    torch.manual_seed(55)
    model = CNN_v0(1, a.hidden, 10)
    # Distinct batches in turn, as worker/examples/cnn_variants.rs: one batch trained over and
    # over is learnt by heart, and its tiny gradients (denormal floats) time something else.
    xs = torch.randn(100, 64, 1, 28, 28)
    ys = torch.randint(0, 10, (100, 64))
    xe = torch.randn(1000, 1, 28, 28)
    cl = a.layout == "channels_last"
    if cl:
        model = model.to(memory_format=torch.channels_last)
        xe = xe.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    i = 0

    def step():
        nonlocal i
        i += 1
        x, y = xs[i % 100], ys[i % 100]
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    t = time.perf_counter()
    for _ in range(a.steps):
        last = step()
    train = (time.perf_counter() - t) / a.steps * 938
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(10):
            model(xe).argmax(1).sum().item()
    ev = time.perf_counter() - t
    print(json.dumps({"impl": f"pytorch {a.layout}", "threads": a.threads, "train_s": train, "eval_s": ev,
                      "loss": last}))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--layout", default="nchw")
    p.add_argument("--example", help="the built cnn_variants example")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--variants", default="worker,nchw,channels-last,mkldnn-direct,im2col,im2col-nhwc")
    p.add_argument("--pytorch", default="nchw,channels_last")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--hidden", type=int, default=10)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json-out")
    a = p.parse_args()
    if a.child:
        a.threads = int(a.threads)
        return pytorch_child(a)
    common = ["--hidden", str(a.hidden), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    runs = []
    for threads in a.threads.split(","):
        for v in a.variants.split(","):
            runs.append([a.example, "--variant", v, "--threads", threads, *common])
        for layout in a.pytorch.split(","):
            runs.append([a.python, __file__, "--child", "--layout", layout, "--threads", threads, *common])
    results = {}
    for r in range(a.repeats):
        for cmd in runs:
            rec = run(cmd)
            print(json.dumps({"round": r + 1, **rec}), file=sys.stderr, flush=True)
            results.setdefault((rec["impl"], rec["threads"]), []).append(rec)
    print(f"TinyVGG h{a.hidden}, batch 64, {a.steps} steps after {a.warmup} warm-up, median of {a.repeats} "
          "alternating rounds\n")
    print("| threads | implementation | train s per 938 steps | vs PyTorch NCHW | eval s per 10k images | final loss |")
    print("|---|---|---|---|---|---|")
    rows = []
    for (impl, threads), recs in results.items():
        train = statistics.median(r["train_s"] for r in recs)
        ev = statistics.median(r["eval_s"] for r in recs)
        ref = statistics.median(r["train_s"] for r in results[("pytorch nchw", threads)]) \
            if ("pytorch nchw", threads) in results else float("nan")
        rows.append(dict(impl=impl, threads=threads, train_s=train, eval_s=ev, ratio=train / ref,
                         all_train_s=[r["train_s"] for r in recs], loss=recs[-1]["loss"]))
        print(f"| {threads} | {impl} | {train:.2f} | {train / ref:.2f}x | {ev:.2f} | {recs[-1]['loss']:.4f} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
