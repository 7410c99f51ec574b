"""The DC and DM steps written in PyTorch the way the reference implementation does them.

Reference: VICO-UoE/DatasetCondensation ``main.py`` (DC / DSA) and ``main_DM.py`` (DM),
``networks.py`` (ConvNet), ``utils.py`` (``match_loss`` / ``distance_wb``). Written
from the description of those files for timing only (bench/bench_distill.py); torch
is not a dependency of the package (``pip install torch==2.13.0`` installs a CPU wheel
into the venv for the benchmark).

ConvNet: depth x [conv 3x3 (padding 3 for a 28x28 single-channel first layer, else
1) -> GroupNorm(width, width, affine) -> ReLU -> AvgPool 2x2], flatten, Linear.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as tnn
import torch.nn.functional as F


class ConvNet(tnn.Module):
    """Reference ``ConvNet`` (instance norm = GroupNorm(C, C), avg pooling)."""

    def __init__(self, channel: int, num_classes: int, width: int = 128, depth: int = 3,
                 im_size: tuple[int, int] = (32, 32)):
        super().__init__()
        layers = []
        c, h, w = channel, im_size[0], im_size[1]
        for d in range(depth):
            pad = 3 if (channel == 1 and d == 0 and im_size[0] == 28) else 1
            layers += [tnn.Conv2d(c, width, 3, padding=pad), tnn.GroupNorm(width, width, affine=True),
                       tnn.ReLU(inplace=True), tnn.AvgPool2d(2, 2)]
            c = width
            if d == 0:
                h, w = h + 2 * (pad - 1), w + 2 * (pad - 1)
            h, w = h // 2, w // 2
        self.features = tnn.Sequential(*layers)
        self.classifier = tnn.Linear(c * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened last-block features."""
        return self.features(x).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def distance_wb(gwr: torch.Tensor, gws: torch.Tensor) -> torch.Tensor:
    """Per output channel 1 - cos, summed; 1-D parameters contribute 0."""
    shape = gwr.shape
    if len(shape) == 1:
        return torch.tensor(0.0)
    gwr = gwr.reshape(shape[0], -1)
    gws = gws.reshape(shape[0], -1)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1)
                     / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001))


def match_loss(gw_syn, gw_real) -> torch.Tensor:
    """Reference ``match_loss`` with ``dis_metric='ours'``."""
    return sum(distance_wb(r, s) for r, s in zip(gw_real, gw_syn))


class TorchDC:
    """One DC iteration: fresh net, ``outer_loop`` x (per-class matching, image SGD
    step, ``inner_loop`` epochs of net SGD on the synthetic set)."""

    def __init__(self, x_real: np.ndarray, y_real: np.ndarray, num_classes: int, ipc: int,
                 outer_loop: int, inner_loop: int, batch_real: int = 256, width: int = 128,
                 depth: int = 3, lr_img: float = 0.1, lr_net: float = 0.01, batch_train: int = 256):
        self.x = torch.tensor(np.transpose(x_real, (0, 3, 1, 2)).copy(), dtype=torch.float32)
        self.y = torch.tensor(y_real, dtype=torch.long)
        self.k, self.ipc = num_classes, ipc
        self.indices = [np.flatnonzero(y_real == c) for c in range(num_classes)]
        self.outer, self.inner = outer_loop, inner_loop
        self.batch_real, self.batch_train = batch_real, batch_train
        self.width, self.depth, self.lr_net = width, depth, lr_net
        self.channel, self.im_size = self.x.shape[1], tuple(self.x.shape[2:])
        self.image_syn = torch.randn(num_classes * ipc, *self.x.shape[1:], requires_grad=True)
        self.label_syn = torch.arange(num_classes).repeat_interleave(ipc)
        self.opt_img = torch.optim.SGD([self.image_syn], lr=lr_img, momentum=0.5)
        self.criterion = tnn.CrossEntropyLoss()

    def get_images(self, c: int, n: int) -> torch.Tensor:
        return self.x[np.random.permutation(self.indices[c])[:n]]

    def step(self) -> float:
        net = ConvNet(self.channel, self.k, self.width, self.depth, self.im_size)
        net.train()
        params = list(net.parameters())
        opt_net = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        loss_avg = 0.0
        for ol in range(self.outer):
            loss = torch.tensor(0.0)
            for c in range(self.k):
                img_real = self.get_images(c, self.batch_real)
                lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long)
                img_syn = self.image_syn[c * self.ipc:(c + 1) * self.ipc]
                lab_syn = torch.full((self.ipc,), c, dtype=torch.long)
                gw_real = torch.autograd.grad(self.criterion(net(img_real), lab_real), params)
                gw_real = [g.detach().clone() for g in gw_real]
                gw_syn = torch.autograd.grad(self.criterion(net(img_syn), lab_syn), params,
                                             create_graph=True)
                loss = loss + match_loss(gw_syn, gw_real)
            self.opt_img.zero_grad()
            loss.backward()
            self.opt_img.step()
            loss_avg += loss.item()
            if ol == self.outer - 1:
                break
            x_tr, y_tr = self.image_syn.detach().clone(), self.label_syn.clone()
            for _ in range(self.inner):
                perm = torch.randperm(len(x_tr))
                for s in range(0, len(x_tr), self.batch_train):
                    b = perm[s:s + self.batch_train]
                    l = self.criterion(net(x_tr[b]), y_tr[b])
                    opt_net.zero_grad()
                    l.backward()
                    opt_net.step()
        return loss_avg / (self.k * self.outer)


class TorchDM:
    """One DM iteration (no augmentation): fresh net, per-class mean-embedding loss."""

    def __init__(self, x_real: np.ndarray, y_real: np.ndarray, num_classes: int, ipc: int,
                 batch_real: int = 256, width: int = 128, depth: int = 3, lr_img: float = 1.0):
        self.x = torch.tensor(np.transpose(x_real, (0, 3, 1, 2)).copy(), dtype=torch.float32)
        self.k, self.ipc, self.batch_real = num_classes, ipc, batch_real
        self.indices = [np.flatnonzero(y_real == c) for c in range(num_classes)]
        self.width, self.depth = width, depth
        self.channel, self.im_size = self.x.shape[1], tuple(self.x.shape[2:])
        self.image_syn = torch.randn(num_classes * ipc, *self.x.shape[1:], requires_grad=True)
        self.opt_img = torch.optim.SGD([self.image_syn], lr=lr_img, momentum=0.5)

    def step(self) -> float:
        net = ConvNet(self.channel, self.k, self.width, self.depth, self.im_size)
        net.train()
        for p in net.parameters():
            p.requires_grad = False
        loss = torch.tensor(0.0)
        for c in range(self.k):
            img_real = self.x[np.random.permutation(self.indices[c])[:self.batch_real]]
            img_syn = self.image_syn[c * self.ipc:(c + 1) * self.ipc]
            out_real = net.embed(img_real).detach()
            out_syn = net.embed(img_syn)
            loss = loss + torch.sum((out_real.mean(0) - out_syn.mean(0)) ** 2)
        self.opt_img.zero_grad()
        loss.backward()
        self.opt_img.step()
        return loss.item() / self.k


def time_steps(obj, reps: int) -> list[float]:
    """Wall seconds of ``reps`` calls of ``obj.step()`` (after one warm-up call)."""
    obj.step()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        obj.step()
        out.append(time.perf_counter() - t)
    return out


def flax_params_from_torch(net: ConvNet) -> dict:
    """The parameters of ``net`` as a gold ConvNet parameter tree (Flax layout).

    conv (O,I,H,W) -> (H,W,I,O); GroupNorm weight/bias -> InstanceNorm scale/bias;
    Linear (O, C*H*W) in PyTorch's NCHW flatten order -> (H*W*C, O) in NHWC order.
    """
    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    convs = [k for k in sd if k.startswith("features") and k.endswith("weight") and sd[k].ndim == 4]
    norms = [k for k in sd if k.startswith("features") and k.endswith("weight") and sd[k].ndim == 1]
    p = {}
    for i, (kc, kn) in enumerate(zip(convs, norms)):
        p[f"conv_{i}"] = {"kernel": sd[kc].transpose(2, 3, 1, 0), "bias": sd[kc.replace("weight", "bias")]}
        p[f"norms_{i}"] = {"scale": sd[kn], "bias": sd[kn.replace("weight", "bias")]}
    w = sd["classifier.weight"]
    c = sd[convs[-1]].shape[0]
    hw = int(round((w.shape[1] // c) ** 0.5))
    p["head"] = {"kernel": w.reshape(w.shape[0], c, hw, hw).transpose(0, 2, 3, 1).reshape(w.shape[0], -1).T,
                 "bias": sd["classifier.bias"]}
    return p


def dc_class_loss_and_image_grad(net: ConvNet, x_real: np.ndarray, x_syn: np.ndarray, c: int):
    """Reference DC matching loss of one class and its gradient w.r.t. the synthetic
    images (NHWC numpy in, NHWC numpy out), in the network's dtype."""
    dtype = next(net.parameters()).dtype
    xr = torch.tensor(x_real.transpose(0, 3, 1, 2), dtype=dtype)
    xs = torch.tensor(x_syn.transpose(0, 3, 1, 2), dtype=dtype, requires_grad=True)
    params = list(net.parameters())
    gr = [g.detach() for g in torch.autograd.grad(
        F.cross_entropy(net(xr), torch.full((len(xr),), c)), params)]
    gs = torch.autograd.grad(F.cross_entropy(net(xs), torch.full((len(xs),), c)), params, create_graph=True)
    loss = match_loss(gs, gr)
    gx = torch.autograd.grad(loss, xs)[0]
    return float(loss.detach()), gx.numpy().transpose(0, 2, 3, 1)


__all__ = ["ConvNet", "TorchDC", "TorchDM", "dc_class_loss_and_image_grad", "distance_wb",
           "flax_params_from_torch", "match_loss", "time_steps"]
