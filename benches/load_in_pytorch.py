"""Checks that a worker's checkpoint loads into the notebook's own PyTorch classes with
load_state_dict and reproduces the worker's test-set predictions.

    python benches/load_in_pytorch.py ARTIFACT_DIR DATA_DIR   (a python with torch + safetensors' torch API)
"""
import gzip, json, os, sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import CNN_v0, FFv0  # noqa: E402


class FFv1(torch.nn.Module):
    def __init__(self, input_shape, hidden_dimension):
        super().__init__()
        self.capas = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape, hidden_dimension),
                                         torch.nn.ReLU(), torch.nn.Linear(hidden_dimension, 10))

    def forward(self, x):
        return self.capas(x)


class FFv2(torch.nn.Module):
    def __init__(self, input_shape, hidden_dimension):
        super().__init__()
        self.capas = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(input_shape, hidden_dimension), torch.nn.ReLU(),
            torch.nn.Linear(hidden_dimension, hidden_dimension), torch.nn.ReLU(), torch.nn.Linear(hidden_dimension, 10))

    def forward(self, x):
        return self.capas(x)


class FFv3(torch.nn.Module):
    def __init__(self, input_shape, hidden_dimension, p=0.25):
        super().__init__()
        self.capas = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(input_shape, hidden_dimension), torch.nn.Dropout(p), torch.nn.ReLU(),
            torch.nn.Dropout(p), torch.nn.Linear(hidden_dimension, hidden_dimension), torch.nn.ReLU(),
            torch.nn.Linear(hidden_dimension, 10))

    def forward(self, x):
        return self.capas(x)


def main():
    art, data = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(art, "config.json")))
    h = cfg["hparams"]
    model = {"ffv0": lambda: FFv0(784, h["hidden"]), "ffv1": lambda: FFv1(784, h["hidden"]),
             "ffv2": lambda: FFv2(784, h["hidden"]), "ffv3": lambda: FFv3(784, h["hidden"], h["dropout"]),
             "cnn": lambda: CNN_v0(1, h["hidden"], 10)}[h["arch"]]()
    model.load_state_dict(load_file(os.path.join(art, "model.safetensors")))  # strict: every key must match
    model.eval()
    preds = load_file(os.path.join(art, "predictions.safetensors"))
    n = preds["labels"].shape[0]
    with gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 1, 28, 28)[:n]
    x = (torch.from_numpy(x.copy()).float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1)
    diff = (probs - preds["probs"]).abs().max().item()
    print(f"{h['arch']}: load_state_dict ok, {n} test predictions match the worker's to {diff:.2e}")
    assert diff < 1e-4, diff


if __name__ == "__main__":
    main()
