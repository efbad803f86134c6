"""Records data/fla_0.5.2_op_fingerprints.json (run from anywhere, in an environment with fla-core and
flash-linear-attention 0.5.2, triton and torch; no GPU needed):
    TRITON_INTERPRET=1 python tests/python/data/record_fla_fingerprints.py
fla's kernels run on the CPU under the Triton interpreter, in float32."""
import importlib
import json
import sys
import warnings
from pathlib import Path

warnings.simplefilter("ignore")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import triton.runtime.autotuner as at  # noqa: E402

at.Autotuner._bench = lambda self, *a, config, **k: [1.0, 1.0, 1.0]  # the interpreter cannot time kernels
import fla  # noqa: E402
import torch  # noqa: E402
from fla_parity_inputs import (LAYER_CASES, MODEL_CASES, MODEL_COMMON, STABLE_SORT_CASES, cases, det,  # noqa: E402
                               fill_parameters, import_path, probes, token_ids, weights)

_argsort = torch.Tensor.argsort


def sort_stably(on):
    """torch.Tensor.argsort made stable (for fla's MomAttention, see STABLE_SORT_CASES), or restored."""
    torch.Tensor.argsort = (lambda self, *a, **k: _argsort(self, *a, **{**k, "stable": True})) if on else _argsort
out = {"fla_version": fla.__version__, "cases": {}}
for name, module, fn_name, tensors, kw in cases():
    fn = getattr(importlib.import_module(f"fla.ops.{module}"), fn_name)
    leaves = {n: (t.float().requires_grad_() if t.is_floating_point() else t) for n, t in tensors.items()}
    res = fn(**leaves, **kw)
    o, ht = res[0], res[1]
    ht = None if isinstance(ht, tuple) else ht
    loss = (o * weights(o, 0).float()).sum() + (0 if ht is None else (ht * weights(ht, 1).float()).sum())
    rec = {"o": probes(o.detach(), "o"), "norm_o": float(o.detach().double().norm())}
    if ht is not None:
        rec["ht"], rec["norm_ht"] = probes(ht.detach(), "ht"), float(ht.detach().double().norm())
    try:
        loss.backward()
        for n, t in leaves.items():
            if t.is_floating_point() and t.grad is not None:
                rec["d" + n], rec["norm_d" + n] = probes(t.grad, "d" + n), float(t.grad.double().norm())
    except NotImplementedError:
        rec["no_backward_in_fla"] = True
    out["cases"][name] = rec
    print(name, "recorded", sorted(k for k in rec if not k.startswith("norm")))
for name, fla_path, _, kw, train, T in LAYER_CASES:
    sort_stably(name in STABLE_SORT_CASES)
    layer = import_path(fla_path)(**kw).train(train)
    fill_parameters(layer)
    x = det(2, T, kw["hidden_size"], seed=3000).float().requires_grad_()
    o = layer(x)[0]
    rec = {"o": probes(o.detach(), "o"), "norm_o": float(o.detach().double().norm())}
    try:
        (o * weights(o, 0).float()).sum().backward()
    except NotImplementedError:  # fla's recurrent gated delta rule has no backward
        rec["no_backward_in_fla"] = True
    else:
        rec["dx"], rec["norm_dx"] = probes(x.grad, "dx"), float(x.grad.double().norm())
        for n, p in layer.named_parameters():
            rec["d" + n], rec["norm_d" + n] = probes(p.grad, "d" + n), float(p.grad.double().norm())
    out["cases"][name] = rec
    print(name, "recorded", len(rec) // 2, "tensors")
for name, prefix, kw, train, T in MODEL_CASES:
    sort_stably(name in STABLE_SORT_CASES)
    config = import_path(f"fla.models.{prefix}Config")(**MODEL_COMMON, **kw)
    model = import_path(f"fla.models.{prefix}ForCausalLM")(config).train(train)
    fill_parameters(model)
    ids = token_ids(T)
    res = model(ids, labels=ids)
    rec = {"logits": probes(res.logits.detach(), "logits"), "norm_logits": float(res.logits.detach().double().norm()),
           "loss": float(res.loss)}
    if getattr(res, "aux_loss", None) is not None:
        rec["aux_loss"] = float(res.aux_loss)
    try:
        res.loss.backward()
    except NotImplementedError:  # fla's recurrent gated delta rule has no backward
        rec["no_backward_in_fla"] = True
    else:
        for n, p in model.named_parameters():
            rec["d" + n], rec["norm_d" + n] = probes(p.grad, "d" + n), float(p.grad.double().norm())
    out["cases"][name] = rec
    print(name, "recorded", len(rec) // 2, "tensors")
(HERE / "fla_0.5.2_op_fingerprints.json").write_text(json.dumps(out, indent=1))
