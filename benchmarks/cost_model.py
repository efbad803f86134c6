"""FLOP and HBM-byte models, so measured times can be read against the matmul and copy ceilings of the run.

Notation per sequence of T tokens and per head: key dim K, value dim V, chunk size C = 64 (the kernels' chunk).
Counting rule: an [m x n] @ [n x p] product costs 2mnp FLOP; the C x C intra-chunk blocks are counted in full
(kernels compute the whole tile and mask it); elementwise work (gates, exp, L2 norms) is not counted.

Chunked GLA and simple GLA, forward (the usual chunk-form count):
    intra-chunk scores   Q_c K_c^T                       2 C K   per token
    intra-chunk output   A_c V_c                         2 C V   per token
    inter-chunk output   Q_c S                           2 K V   per token
    state update         K_c^T V_c                       2 K V   per token
    -> 2 T (C K + C V + 2 K V)
Chunked DeltaNet and gated DeltaNet, forward: the GLA count plus the WY/UT representation
    K_c K_c^T (for T = (I + tril(diag(b) K K^T, -1))^-1)  2 C K   per token
    W = T diag(b) K,  U = T diag(b) V                      2 C K + 2 C V   per token
    V_new = U - W S                                        2 K V   per token
    (the triangular inverse, about C^3/3 per chunk, is left out)
    -> 2 T (3 C K + 2 C V + 3 K V)
Backward is taken as 2x forward (each product has two gradient products), so forward+backward = 3x forward.

Bytes are a lower bound on HBM traffic: forward reads every input once and writes o; backward reads the inputs
and dO again and writes one gradient per input. Chunk states saved for backward, recomputation and fp32
intermediates are not counted, so the bandwidth fraction is an optimistic bound of what is reachable.

Decoding (T = 1): the state is read and written once in fp32 (N H K V 4 bytes each way) and q, k, v, o and the
gates are read or written once; nothing else has to move, which makes this the memory-bandwidth floor."""

CHUNK = 64


def chunked_flops(op: str, tokens: int, H: int, K: int, V: int, backward: bool) -> float:
    """Model FLOP of one call over `tokens` tokens in total (all sequences of the batch together)."""
    C = CHUNK
    if op in ("chunk_gla", "chunk_simple_gla"):
        per_token = 2 * (C * K + C * V + 2 * K * V)
    elif op in ("chunk_delta_rule", "chunk_gated_delta_rule"):
        per_token = 2 * (3 * C * K + 2 * C * V + 3 * K * V)
    else:
        raise ValueError(f"no FLOP model for {op}")
    return per_token * tokens * H * (3 if backward else 1)


def _gate_elems(op: str, K: int) -> int:
    """Gate (and beta) elements per token and head."""
    return {"chunk_gla": K, "chunk_simple_gla": 1, "chunk_delta_rule": 1, "chunk_gated_delta_rule": 2,
            "fused_recurrent_gla": K, "fused_recurrent_simple_gla": 1, "fused_recurrent_delta_rule": 1,
            "fused_recurrent_gated_delta_rule": 2}[op]


def chunked_bytes(op: str, tokens: int, H: int, K: int, V: int, elem: int, backward: bool) -> float:
    inputs = tokens * H * (2 * K + V + _gate_elems(op, K)) * elem
    out = tokens * H * V * elem
    if not backward:
        return inputs + out
    return 3 * inputs + 2 * out  # fwd: I + O; bwd: I + dO + dI


def decode_bytes(op: str, N: int, H: int, K: int, V: int, elem: int) -> float:
    state = 2 * N * H * K * V * 4
    io = N * H * (2 * K + 2 * V + _gate_elems(op, K)) * elem
    return state + io
