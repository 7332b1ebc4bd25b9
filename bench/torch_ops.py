"""The same ops at the same sizes as bench_ops.c, in PyTorch (the stack the
reference implementation runs on), timed the same way: median of CUDA-event
timings after warm-up. Prints lines `ref <name> <dtype> fwd_ms <x> fwdbwd_ms <y>`.
rmsnorm_residual here is an unfused add + torch.nn.functional.rms_norm."""
import torch
import torch.nn.functional as F

WARMUP, REPS = 3, 20
T, D, V, IN = 8 * 2048, 1024, 50288, 2 * 2048 + 2 * 128 + 32
dev = "cuda"


def time_ms(fn, backward):
    times = []
    for r in range(WARMUP + REPS):
        inputs, seed = fn.make()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        if backward:
            out = fn(*inputs)
            out.backward(seed)
        else:
            with torch.no_grad():
                fn(*inputs)
        stop.record()
        torch.cuda.synchronize()
        if r >= WARMUP:
            times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


class Case:
    def __init__(self, name, dtype, shapes, op, ids=None):
        self.name, self.dtype, self.op = name, dtype, op
        self.tensors = []
        for i, s in enumerate(shapes):
            if ids and i == ids[0]:
                self.tensors.append(torch.randint(0, ids[1], s, device=dev, dtype=torch.int64))
            else:
                t = torch.rand(s, device=dev, dtype=torch.float32) * 2 - 1
                self.tensors.append(t.to(dtype) if not (op is rmsnorm and i > 0) else t)
        with torch.no_grad():
            out = op(*self.tensors)
        self.seed = torch.rand_like(out) * 2 - 1

    def make(self):
        ins = [t.detach().requires_grad_(t.is_floating_point()) for t in self.tensors]
        return ins, self.seed

    def __call__(self, *ins):
        return self.op(*ins)


def rmsnorm(x, residual, weight):
    r = x.float() + residual
    return F.rms_norm(r, (r.shape[-1],), weight, 1e-5).to(x.dtype)


def cross_entropy(logits, targets):
    return F.cross_entropy(logits.float(), targets, ignore_index=-100)


bf16, f32 = torch.bfloat16, torch.float32
cases = [
    Case("linear_in_proj", bf16, [(T, D), (IN, D)], F.linear),
    Case("linear_in_proj", f32, [(T, D), (IN, D)], F.linear),
    Case("lm_head", bf16, [(T, D), (V, D)], F.linear),
    Case("embedding", bf16, [(V, D), (T,)], lambda w, i: F.embedding(i, w), ids=(1, V)),
    Case("rmsnorm_residual", bf16, [(T, D), (T, D), (D,)], rmsnorm),
    Case("silu", bf16, [(T, 2 * D)], F.silu),
    Case("mul", bf16, [(T, 2 * D), (T, 2 * D)], torch.mul),
    Case("cross_entropy", bf16, [(T, V), (T,)], cross_entropy, ids=(1, V)),
]
torch.backends.cuda.matmul.allow_tf32 = False
for c in cases:
    fwd, both = time_ms(c, False), time_ms(c, True)
    name = {bf16: "bf16", f32: "f32"}[c.dtype]
    print(f"ref {c.name} {name} fwd_ms {fwd:.3f} fwdbwd_ms {both:.3f}", flush=True)
