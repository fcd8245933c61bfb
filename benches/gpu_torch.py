"""PyTorch beside the worker on one GPU (scripts/gpu-check.sh runs this; issue 10).

The notebook's ffv0 and TinyVGG (cnn) trained as the worker trains them, with the data already
on the device: the images as uint8 on the GPU, normalized per batch ((x / 255 - 0.5) / 0.5), a
randperm per epoch, batches as index gathers, sums kept on the device, one host read per
epoch. One epoch = every training image (batch 64, SGD lr 0.1) + the 10,000 test images
evaluated in batches of 1000; what `worker train --validation 0` calls an epoch. Nothing but
torch and the standard library (no torchvision, no numpy): the IDX files are read with gzip.

Prints one JSON object per epoch:
  {"impl": "pytorch", "arch", "device", "epoch", "seconds", "train_loss", "test_acc"}
"""
import argparse, gzip, json, os, struct, time

import torch


class FFv0(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.capas = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(28 * 28, hidden), torch.nn.Sigmoid(), torch.nn.Linear(hidden, 10)
        )

    def forward(self, x):
        return self.capas(x)


class CNN_v0(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        conv = lambda i: torch.nn.Conv2d(i, hidden, kernel_size=3, stride=1, padding=1)
        self.block_1 = torch.nn.Sequential(conv(1), torch.nn.ReLU(), conv(hidden), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.block_2 = torch.nn.Sequential(conv(hidden), torch.nn.ReLU(), conv(hidden), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(hidden * 7 * 7, 10))

    def forward(self, x):
        return self.classifier(self.block_2(self.block_1(x)))


def read_idx(data_dir, stem, limit=None):
    """An IDX file (raw or .gz) as a uint8 tensor: images [N, 1, 28, 28] or labels [N]."""
    path = os.path.join(data_dir, stem)
    raw = open(path, "rb").read() if os.path.exists(path) else gzip.open(path + ".gz", "rb").read()
    magic, n = struct.unpack(">II", raw[:8])
    header, shape = (16, (n, 1, 28, 28)) if magic == 0x803 else (8, (n,))
    t = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)
    return t[:limit] if limit else t


def normalize(x):
    return x.float() / 127.5 - 1.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["ffv0", "cnn"], required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--train-limit", type=int)
    p.add_argument("--test-limit", type=int)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    # On the device once, before the first epoch.
    xtr = read_idx(a.data_dir, "train-images-idx3-ubyte", a.train_limit).to(dev)
    ytr = read_idx(a.data_dir, "train-labels-idx1-ubyte", a.train_limit).long().to(dev)
    xte = read_idx(a.data_dir, "t10k-images-idx3-ubyte", a.test_limit).to(dev)
    yte = read_idx(a.data_dir, "t10k-labels-idx1-ubyte", a.test_limit).long().to(dev)
    torch.manual_seed(55)
    model = (FFv0(a.hidden) if a.arch == "ffv0" else CNN_v0(a.hidden)).to(dev)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = len(ytr)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for epoch in range(1, a.epochs + 1):
        sync()
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=dev)
        total = torch.zeros((), dtype=torch.float64, device=dev)
        for s in range(0, n, 64):
            idx = perm[s : s + 64]
            x, y = normalize(xtr[idx]), ytr[idx]
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        with torch.inference_mode():
            for s in range(0, len(yte), 1000):
                correct += (model(normalize(xte[s : s + 1000])).argmax(1) == yte[s : s + 1000]).sum()
        train_loss, test_acc = float(total) / n, int(correct) / len(yte)
        sync()
        print(json.dumps(dict(impl="pytorch", arch=a.arch, device=a.device, epoch=epoch,
                              seconds=time.perf_counter() - t, train_loss=train_loss, test_acc=test_acc)),
              flush=True)


if __name__ == "__main__":
    main()
