"""A plain PyTorch training loop of R2U-Net, written apart from the peer harness.

The yardstick for benchmarks/peers/torch_r2unet.py: it imports nothing from
_torch_harness.py or torch_r2unet.py. The model is the R2U-Net of Alom et al. (2018) in the
style of LeeJunHyun/Image_Segmentation (Recurrent_block, RRCNN_block, up_conv) at r2u's
sizes so the parameter count is the same (2,445,938 at 1 input channel, 2 classes):
widths 16-32-64-128 and a 256 bottleneck, t=2, conv3x3 without bias + BatchNorm (momentum
0.01, eps 1e-3) + ReLU shared across the recurrent steps, 1x1 projection with bias, 3x3
stride-2 transposed conv (no bias) + BN + ReLU to upsample, dropout 0.1 after every block,
1x1 head. One training step: forward, class-weighted cross-entropy, backward, global-norm
clipping at 1.0, Adam 1e-3; the batch (fixed seed, ~25% foreground) stays in memory.

Run in the torch peer venv (benchmarks/peers/setup.sh torch):

    OMP_NUM_THREADS=1 benchmarks/peers/.venv-torch/bin/python \
        benchmarks/peers/torch_plain_loop.py --threads 1 --steps 4 --repeats 3

--layout says how the channels_last batch is made: `nhwc` (default) builds it as NHWC and
permutes to an NCHW view, as a loader of HWC images would; `to_channels_last` calls
`x.to(memory_format=torch.channels_last)` on an NCHW batch, which with one input channel
changes nothing (a [B, 1, H, W] tensor is already "channels_last contiguous") and leaves
the first layer in NCHW (see benchmarks/NOTES.md); `nchw` runs the whole model in NCHW.
--profile N prints a torch.profiler table of N steps instead of timing. Prints one JSON
line on stdout: images/s by the wall clock (`train_img_s`) and per second of the process's
CPU time (`train_img_per_cpu_s`, the fairer figure when other jobs share the cores).
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Recurrent_block(nn.Module):
    def __init__(self, ch_out, t=2):
        super().__init__()
        self.t = t
        self.conv = nn.Sequential(
            nn.Conv2d(ch_out, ch_out, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(ch_out, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=True))

    def forward(self, x):
        for i in range(self.t):
            if i == 0:
                x1 = self.conv(x)
            x1 = self.conv(x + x1)
        return x1


class RRCNN_block(nn.Module):
    def __init__(self, ch_in, ch_out, t=2):
        super().__init__()
        self.RCNN = nn.Sequential(Recurrent_block(ch_out, t=t), Recurrent_block(ch_out, t=t))
        self.Conv_1x1 = nn.Conv2d(ch_in, ch_out, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        x = self.Conv_1x1(x)
        return x + self.RCNN(x)


class up_conv(nn.Module):
    def __init__(self, ch_in, ch_out):
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(ch_in, ch_out, kernel_size=3, stride=2, padding=1,
                               output_padding=1, bias=False),
            nn.BatchNorm2d(ch_out, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=True))

    def forward(self, x):
        return self.up(x)


class R2U_Net(nn.Module):
    def __init__(self, img_ch=1, output_ch=2, t=2, p=0.1):
        super().__init__()
        self.Maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.drop = nn.Dropout(p)
        self.RRCNN1 = RRCNN_block(img_ch, 16, t)
        self.RRCNN2 = RRCNN_block(16, 32, t)
        self.RRCNN3 = RRCNN_block(32, 64, t)
        self.RRCNN4 = RRCNN_block(64, 128, t)
        self.RRCNN5 = RRCNN_block(128, 256, t)
        self.Up5 = up_conv(256, 128)
        self.Up_RRCNN5 = RRCNN_block(256, 128, t)
        self.Up4 = up_conv(128, 64)
        self.Up_RRCNN4 = RRCNN_block(128, 64, t)
        self.Up3 = up_conv(64, 32)
        self.Up_RRCNN3 = RRCNN_block(64, 32, t)
        self.Up2 = up_conv(32, 16)
        self.Up_RRCNN2 = RRCNN_block(32, 16, t)
        self.Conv_1x1 = nn.Conv2d(16, output_ch, kernel_size=1, stride=1, padding=0)

    def forward(self, x):
        x1 = self.drop(self.RRCNN1(x))
        x2 = self.drop(self.RRCNN2(self.Maxpool(x1)))
        x3 = self.drop(self.RRCNN3(self.Maxpool(x2)))
        x4 = self.drop(self.RRCNN4(self.Maxpool(x3)))
        x5 = self.drop(self.RRCNN5(self.Maxpool(x4)))
        d5 = self.drop(self.Up_RRCNN5(torch.cat((x4, self.Up5(x5)), dim=1)))
        d4 = self.drop(self.Up_RRCNN4(torch.cat((x3, self.Up4(d5)), dim=1)))
        d3 = self.drop(self.Up_RRCNN3(torch.cat((x2, self.Up3(d4)), dim=1)))
        d2 = self.drop(self.Up_RRCNN2(torch.cat((x1, self.Up2(d3)), dim=1)))
        return self.Conv_1x1(d2)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_size", type=int, default=128)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--layout", choices=("nhwc", "to_channels_last", "nchw"), default="nhwc")
    p.add_argument("--compile", type=int, choices=(0, 1), default=0,
                   help="torch.compile the model (inductor, CPU)")
    p.add_argument("--profile", type=int, default=0,
                   help="profile this many steps after warm-up and print the table")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b, s, c = args.batch_size, args.image_size, args.channels
    images = rng.standard_normal((b, s, s, c), dtype=np.float32)  # NHWC, as images load
    labels = (rng.random((b, s, s)) < 0.25).astype(np.int64)
    if args.layout == "nhwc":
        x = torch.from_numpy(images).permute(0, 3, 1, 2)  # NCHW view of NHWC memory
    else:
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        if args.layout == "to_channels_last":
            x = x.to(memory_format=torch.channels_last)
    y = torch.from_numpy(labels)
    counts = torch.bincount(y.flatten(), minlength=2).float()
    weight = counts.sum() / counts
    weight = weight / weight.mean()

    model = R2U_Net(img_ch=c, output_ch=2)
    if args.layout != "nchw":
        model = model.to(memory_format=torch.channels_last)
    params = sum(t.numel() for t in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if args.compile else model
    model.train()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y, weight=weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    print(f"[plain] R2U-Net {params:,} params, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, layout {args.layout}, compile {args.compile}",
          file=sys.stderr, flush=True)
    start = time.perf_counter()
    for _ in range(args.warmup):
        loss = train_step()
    loss.item()
    warmup_s = time.perf_counter() - start

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.profile):
                train_step()
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
        return

    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            loss = train_step()
        loss.item()
        rates.append(args.steps * b / (time.perf_counter() - start))
        cpu_rates.append(args.steps * b / (time.process_time() - cpu_start))
    print(f"[plain] train {statistics.median(rates):.2f} img/s median of "
          f"{', '.join(f'{r:.2f}' for r in rates)}", file=sys.stderr, flush=True)
    print(json.dumps({"script": "torch_plain_loop", "params": params, "layout": args.layout,
                      "compile": bool(args.compile), "threads": torch.get_num_threads(),
                      "batch_size": b, "image_size": s, "channels": c,
                      "warmup_s": warmup_s, "train_img_s": statistics.median(rates),
                      "train_img_s_all": rates,
                      "train_img_per_cpu_s": statistics.median(cpu_rates),
                      "final_loss": float(loss),
                      "torch_version": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
