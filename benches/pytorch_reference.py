"""PyTorch reference loops for the training-speed benchmark (benches/train_speed.py runs this).

Two ways to train the notebook's networks (shared/seed/, sections 3.3 and 6), one epoch =
training on all 60,000 images + evaluating the 10,000 test images, batch 64, SGD lr 0.1:

  notebook  the notebook's own loop: torchvision FashionMNIST with ToTensor + Normalize,
            DataLoader(batch_size=64, shuffle=True), per-batch .item() accumulation
  memory    the same model fed from normalized tensors already in memory: randperm + slices

Prints one JSON object per epoch: {"impl", "arch", "epoch", "seconds", "train_loss", "test_acc"}.
"""
import argparse, gzip, json, os, shutil, sys, tempfile, time

import torch
import torchvision
from torchvision import datasets, transforms


class FFv0(torch.nn.Module):
    def __init__(self, input_shape, hidden_dimention):
        super().__init__()
        self.capas = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(input_shape, hidden_dimention),
            torch.nn.Sigmoid(),
            torch.nn.Linear(hidden_dimention, 10),
        )

    def forward(self, x):
        return self.capas(x)


class CNN_v0(torch.nn.Module):
    def __init__(self, input_shape, hidden_units, output_shape):
        super().__init__()
        self.block_1 = torch.nn.Sequential(
            torch.nn.Conv2d(input_shape, hidden_units, kernel_size=3, stride=1, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden_units, hidden_units, kernel_size=3, stride=1, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.block_2 = torch.nn.Sequential(
            torch.nn.Conv2d(hidden_units, hidden_units, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden_units, hidden_units, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(hidden_units * 7 * 7, output_shape)
        )

    def forward(self, x):
        return self.classifier(self.block_2(self.block_1(x)))


def make_model(arch, hidden):
    return FFv0(28 * 28, hidden) if arch == "ffv0" else CNN_v0(1, hidden, 10)


def torchvision_root(data_dir):
    """torchvision wants root/FashionMNIST/raw/<uncompressed IDX files>."""
    root = tempfile.mkdtemp(prefix="fmnist-")
    raw = os.path.join(root, "FashionMNIST", "raw")
    os.makedirs(raw)
    for stem in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        src = os.path.join(data_dir, stem)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(raw, stem))
        else:
            with gzip.open(src + ".gz", "rb") as f, open(os.path.join(raw, stem), "wb") as g:
                shutil.copyfileobj(f, g)
    return root


# --- the notebook's loop, as written there ---------------------------------------------
def train_step(model, train_dataloader, loss_fn, optimizer):
    model.train()
    train_loss = 0
    train_acc = 0
    for images, labels in train_dataloader:
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        train_loss += loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        predictions = outputs.argmax(dim=1)
        train_acc += ((predictions == labels).sum().item() / len(labels)) * 100
    train_acc /= len(train_dataloader)
    train_loss /= len(train_dataloader)
    return train_loss, train_acc


def test_step(model, test_dataloader, loss_fn):
    model.eval()
    test_loss = 0
    test_acc = 0
    with torch.inference_mode():
        for images, labels in test_dataloader:
            outputs = model(images)
            test_loss += loss_fn(outputs, labels)
            predictions = outputs.argmax(dim=1)
            test_acc += ((predictions == labels).sum().item() / len(labels)) * 100
    return test_loss / len(test_dataloader), test_acc / len(test_dataloader)


def run_notebook(args, root):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train_data = datasets.FashionMNIST(root=root, train=True, download=False, transform=transform)
    test_data = datasets.FashionMNIST(root=root, train=False, download=False, transform=transform)
    train_dl = torch.utils.data.DataLoader(train_data, batch_size=64, shuffle=True)
    test_dl = torch.utils.data.DataLoader(test_data, batch_size=64, shuffle=False)
    torch.manual_seed(55)
    model = make_model(args.arch, args.hidden)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        train_loss, _ = train_step(model, train_dl, loss_fn, opt)
        _, test_acc = test_step(model, test_dl, loss_fn)
        emit("notebook", args, epoch, time.perf_counter() - t, float(train_loss), test_acc / 100)


# --- the same model fed from tensors in memory --------------------------------------------
def run_memory(args, root):
    tr = datasets.FashionMNIST(root=root, train=True, download=False)
    te = datasets.FashionMNIST(root=root, train=False, download=False)
    norm = lambda d: (d.data.float().div(255).unsqueeze(1) - 0.5) / 0.5
    xtr, ytr, xte, yte = norm(tr), tr.targets, norm(te), te.targets
    torch.manual_seed(55)
    model = make_model(args.arch, args.hidden)
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    n = len(ytr)
    for epoch in range(1, args.epochs + 1):
        t = time.perf_counter()
        model.train()
        perm = torch.randperm(n)
        total = torch.zeros((), dtype=torch.float64)
        for s in range(0, n, 64):
            idx = perm[s : s + 64]
            x, y = xtr[idx], ytr[idx]
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(y)
        model.eval()
        correct = 0
        with torch.inference_mode():
            for s in range(0, len(yte), 1000):
                correct += (model(xte[s : s + 1000]).argmax(1) == yte[s : s + 1000]).sum().item()
        emit("memory", args, epoch, time.perf_counter() - t, float(total) / n, correct / len(yte))


def emit(impl, args, epoch, seconds, train_loss, test_acc):
    print(json.dumps(dict(impl=impl, arch=args.arch, hidden=args.hidden, epoch=epoch, seconds=seconds,
                          train_loss=train_loss, test_acc=test_acc)), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--impl", choices=["notebook", "memory"], required=True)
    p.add_argument("--arch", choices=["ffv0", "cnn"], required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = torchvision_root(args.data_dir)
    try:
        (run_notebook if args.impl == "notebook" else run_memory)(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
