"""Runs the emulated kernels in a process of its own, so that a crash, a hang or AddressSanitizer does not
take pytest down with it:

    python worker.py CASES OUT [--asan]

CASES is a torch.save'd list of {"id", "driver", "seed", "inputs"}; for case i the outputs (a dict of
tensors) or {"error": message} are saved to OUT/i.pt. "case i" is printed before each case starts, so the
caller can name the case a crash happened in."""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import build, families  # noqa: E402

E = None  # torch.ops.linattn_emu once loaded


def gla(x):
    common = (x["q"], x["k"], x["v"], x["g"], x["g_gamma"], x["scale"], x["h0"], x["cu_seqlens"])
    o, ht = E.gla_forward(*common, False, True)  # the glue's path: tensor cores for fp16 / bf16 scalar gates
    o_simt, ht_simt = E.gla_forward(*common, False, True, True)
    o_rec, ht_rec = E.gla_forward(*common, True, True)
    # the glue's path: tensor cores for fp16 / bf16 with a scalar or no gate
    dq, dk, dv, dg, dh0 = E.gla_backward(*common, x["do"], x["dht"])
    out = dict(o=o, ht=ht, o_simt=o_simt, ht_simt=ht_simt, o_rec=o_rec, ht_rec=ht_rec, dq=dq, dk=dk, dv=dv, dg=dg,
               dh0=dh0)
    if x.get("simt_backward"):  # the SIMT backward too, for cases that compare both paths
        for name, t in zip(("dq", "dk", "dv", "dg", "dh0"), E.gla_backward(*common, x["do"], x["dht"], True)):
            out[name + "_simt"] = t
    return out


def delta_rule(x):
    common = (x["q"], x["k"], x["v"], x["g"], x["beta"], x["scale"], x["h0"], x["cu_seqlens"])
    o, ht = E.delta_forward(*common, False, True)  # the glue's path: tensor cores for fp16 / bf16
    o_simt, ht_simt = E.delta_forward(*common, False, True, True)
    o_rec, ht_rec = E.delta_forward(*common, True, True)
    # fused_recurrent_delta_rule_inplace: the same kernel with the final state written over the initial one
    o_inplace, ht_inplace = E.delta_recurrent_inplace(*common[:5], x["scale"], x["h0"], x["cu_seqlens"])
    dq, dk, dv, dbeta, dg, dh0 = E.delta_backward(*common, x["do"], x["dht"])  # the glue's backward
    out = dict(o=o, ht=ht, o_simt=o_simt, ht_simt=ht_simt, o_rec=o_rec, ht_rec=ht_rec, o_inplace=o_inplace,
               ht_inplace=ht_inplace, dq=dq, dk=dk, dv=dv, dbeta=dbeta, dg=dg, dh0=dh0)
    if x.get("q_raw") is not None:  # use_qk_l2norm_in_kernel on CUDA: the recurrent kernel normalises raw q, k
        out["o_rec_l2"], out["ht_rec_l2"] = E.delta_recurrent_inplace(
            x["q_raw"], x["k_raw"], *common[2:5], x["scale"], x["h0"], x["cu_seqlens"], True)
    if x.get("simt_backward"):  # the SIMT backward too (LINATTN_DELTA_FORCE_SIMT=1)
        simt = E.delta_backward(*common, x["do"], x["dht"], True)
        for name, t in zip(("dq", "dk", "dv", "dbeta", "dg", "dh0"), simt):
            out[name + "_simt"] = t
        if x["q"].dtype != torch.float32:  # the SIMT passes 1 and 2, then the tensor-core pass 3
            p3 = E.delta_backward(*common, x["do"], x["dht"], False, True)
            for name, t in zip(("dq", "dk", "dv", "dbeta", "dg", "dh0"), p3):
                out[name + "_p3"] = t
    return out


def swa(x):
    args = (x["window"], x["scale"], x["cu_seqlens"])
    o, lse = E.swa_forward(x["q"], x["k"], x["v"], *args)  # the glue's path: tensor cores for fp16 / bf16
    dq, dk, dv = E.swa_backward(x["q"], x["k"], x["v"], o, lse, x["do"], *args)
    out = dict(o=o, lse=lse, dq=dq, dk=dk, dv=dv)
    if x["q"].dtype != torch.float32:  # the SIMT forward and backward too (LINATTN_SWA_FORCE_SIMT=1)
        o_simt, lse_simt = E.swa_forward(x["q"], x["k"], x["v"], *args, True)
        dq_s, dk_s, dv_s = E.swa_backward(x["q"], x["k"], x["v"], o_simt, lse_simt, x["do"], *args, True)
        out.update(o_simt=o_simt, lse_simt=lse_simt, dq_simt=dq_s, dk_simt=dk_s, dv_simt=dv_s)
    return out


def _liger_pass(x, simt):
    """Liger's CUDA path in the order of ops/liger/liger_cuda.cpp: both feature maps in one launch, the window
    forward (o_win, lse), the GLA forward writing o = lw * o_gla + sw * o_win; then the GLA and window backwards
    reading do scaled by lw and sw, dv = dv_gla + dv_win (in the input dtype, as the glue adds), both softmax
    backwards in one launch. simt: LINATTN_GLA_FORCE_SIMT=1 and LINATTN_SWA_FORCE_SIMT=1."""
    sw, lw, w, scale = x["softmax_weight"], x["linear_weight"], x["window"], x["scale"]
    qf, kf = E.liger_softmax_forward(x["q"], x["k"])
    o_win, lse = E.swa_forward(x["q_rot"], x["k_rot"], x["v"], w, scale, None, simt)
    o, ht = E.gla_forward(qf, kf, x["v"], x["g"], None, 1.0, x["h0"], None, False, True, simt, o_win, lw, sw)
    dq_rot, dk_rot, dv_win = E.swa_backward(x["q_rot"], x["k_rot"], x["v"], o_win, lse, x["do"], w, scale, None,
                                            simt, sw)
    dqf, dkf, dv, dg, dh0 = E.gla_backward(qf, kf, x["v"], x["g"], None, 1.0, x["h0"], None, x["do"], x["dht"], simt,
                                           lw)
    dq, dk = E.liger_softmax_backward(qf, kf, dqf, dkf)
    return dict(o=o, ht=ht, dq=dq, dk=dk, dv=dv + dv_win, dg=dg, dq_rot=dq_rot, dk_rot=dk_rot, dh0=dh0)


def liger(x):
    out = _liger_pass(x, False)  # the glue's path: tensor cores for fp16 / bf16
    if x.get("simt"):  # the SIMT GLA and window kernels too
        out.update({n + "_simt": t for n, t in _liger_pass(x, True).items()})
    return out


def lolcats(x):
    ins = [x[n] for n in ("q", "k", "v", "fq", "fk", "window_factor")]
    o, m, z = E.lolcats_forward(ins, x["window"], x["scale"])
    grads = E.lolcats_backward(ins, o, m, z, x["do"], x["window"], x["scale"])
    return dict(o=o, m=m, z=z, **dict(zip(["dq", "dk", "dv", "dfq", "dfk", "dwindow_factor"], grads)))


def mom(x):
    args = (x["indices"], x["E"], x["max_blocks"])
    xs, cu, si = E.mom_dispatch(x["x"], *args)
    y = E.mom_combine(x["y_sorted"], x["weights"], *args)
    dx = E.mom_combine(x["dx_sorted"], None, *args)  # the backward of dispatch: weights of 1
    dys, dw = E.mom_combine_backward(x["dy"], x["y_sorted"], x["weights"], *args)
    return dict(x_sorted=xs, cu_seqlens=cu, sort_index=si, y=y, dx=dx, dy_sorted=dys, dweights=dw)


def selftest(x):
    """Deliberately broken kernels (selftest/broken_kernels.cuh): the output, or the emulator's error."""
    out = {"round_trip_" + str(d).split(".")[-1]: E.round_trip(x["values"], d) for d in (torch.float16, torch.bfloat16)}
    for name in x["kernels"]:
        try:
            out[name] = E.selftest(name)
        except RuntimeError as e:
            out[name] = str(e)
    return out


def _same(a, b):
    if not isinstance(a, torch.Tensor):
        return a == b
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def run_twice(driver, case):
    """Runs a case under two scheduler seeds. The kernels have no atomics, so any difference between the two
    thread interleavings is a race; the names of the outputs that differ go to result["racy"]."""
    E.reset(case["seed"])
    result = driver(case["inputs"])
    result["counters"] = torch.tensor(E.counters())
    E.reset(case["seed"] ^ 0x2545F491)
    again = driver(case["inputs"])
    result["racy"] = [k for k, v in again.items() if not _same(v, result[k])]
    return result


DRIVERS = dict(gla=gla, delta_rule=delta_rule, swa=swa, lolcats=lolcats, liger=liger, mom=mom, selftest=selftest)


def main():
    global E
    cases_file, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    asan = "--asan" in sys.argv[3:]
    os.environ.pop("LD_PRELOAD", None)  # the compiler and ninja must not run with the ASan runtime preloaded
    build(asan=asan)
    E = torch.ops.linattn_emu
    torch.set_num_threads(1)  # the emulator is single-threaded; the harness's small ATen ops only thrash
    built = set(families()) | {"selftest"}
    cases = torch.load(cases_file, weights_only=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        print(f"case {i} {case['id']}", flush=True)
        try:
            if case["driver"] not in built:
                raise RuntimeError(f"no ops/{case['driver']}/cuda in this tree")
            result = run_twice(DRIVERS[case["driver"]], case)
        except RuntimeError as e:  # emulator errors (barrier misuse, fences) and launch errors
            result = {"error": str(e)}
        torch.save(result, out_dir / f"{i}.tmp")
        os.replace(out_dir / f"{i}.tmp", out_dir / f"{i}.pt")  # a crash never leaves a half-written result
    print("done", flush=True)


if __name__ == "__main__":
    main()
