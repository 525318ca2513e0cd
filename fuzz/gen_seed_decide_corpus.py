#!/usr/bin/env python3
"""Writes the hand-written seeds of fuzz/corpus/seed_decide/.

`seed_decide` inputs are decoded with `arbitrary` into `checks::SeedInput`
(fuzz/checks.rs), so a seed is that struct in arbitrary 1.x's byte encoding:
enum tags are little-endian u32 values scaled to the variant count, `Option`
and `bool` are one byte (low bit), u8 one byte, u64 eight bytes little-endian,
and the last field (a `Text` variant) takes the rest of the input.
Keep this file in step with `SeedInput`; the test
`seed_decide_seeds_still_decode` in crates/protocol/tests/fuzz_corpus.rs
notices when they drift apart.

Usage: python3 fuzz/gen_seed_decide_corpus.py
"""
import os
import struct

def var(i, n): return struct.pack('<I', -(-(i << 32) // n))
def small(v): return var(0,3) + bytes([v])
def edge(i): return var(1,3) + bytes([i])
def any64(v): return var(2,3) + struct.pack('<Q', v)
def some(x): return b'\x01' + x
NONE = b'\x00'
def state(held, total_over=None, complete=False):
    return held + (NONE if total_over is None else some(total_over)) + (b'\x01' if complete else b'\x00')
CL_ABSENT, CL_MATCH = var(0,4), var(1,4)
def cl(n): return var(2,4) + n
def abs_(n): return var(0,3) + n
def hm(d): return var(1,3) + bytes([d])
def hp(d): return var(2,3) + bytes([d])
CR_ABSENT = var(0,4)
def cr_bytes(f, l, t=None): return var(1,4) + f + l + (NONE if t is None else some(t))
def cr_query(t=None): return var(2,4) + (NONE if t is None else some(t))
def cr_text(s): return var(3,4) + s.encode()
seeds = {
 'append_first_chunk': state(small(0)) + CL_MATCH + cr_bytes(abs_(small(0)), abs_(small(9)), abs_(small(20))),
 'append_overlap': state(small(10), small(10)) + CL_MATCH + cr_bytes(hm(5), hp(4)),
 'append_completes': state(small(10), small(10)) + CL_MATCH + cr_bytes(hp(0), hp(9)),
 'resend_held': state(small(10), small(10)) + CL_MATCH + cr_bytes(abs_(small(0)), hm(1), hp(10)),
 'gap': state(small(5)) + CL_ABSENT + cr_bytes(hp(1), hp(4)),
 'past_total': state(small(0), small(10)) + CL_ABSENT + cr_bytes(abs_(small(5)), abs_(small(10))),
 'query_finalize': state(small(5)) + CL_MATCH + cr_query(hp(0)),
 'query_report': state(small(5)) + CL_ABSENT + cr_query(),
 'total_below_held': state(small(10)) + CL_ABSENT + cr_query(hm(5)),
 'total_changed': state(small(0), small(100)) + CL_MATCH + cr_bytes(abs_(small(0)), abs_(small(9)), abs_(small(200))),
 'whole_put': state(small(0)) + cl(small(4)) + CR_ABSENT,
 'whole_put_empty': state(small(0)) + cl(small(0)) + CR_ABSENT,
 'whole_after_start': state(small(1)) + cl(small(4)) + CR_ABSENT,
 'length_required': state(small(0)) + CL_ABSENT + CR_ABSENT,
 'length_mismatch': state(small(0)) + cl(small(5)) + cr_bytes(abs_(small(0)), abs_(small(9)), abs_(small(10))),
 'complete_replays': state(small(10), small(0), True) + CL_MATCH + cr_bytes(abs_(small(0)), abs_(small(9)), abs_(small(99))),
 'near_u64_max': state(edge(10)) + CL_MATCH + cr_bytes(hp(0), hp(0)),
 'u64_max_last': state(edge(10)) + CL_ABSENT + cr_bytes(hp(0), hp(1)),
 'text_range': state(small(0)) + CL_ABSENT + cr_text('bytes 0-262143/*'),
 'text_progress': state(any64(262144)) + CL_ABSENT + cr_text('bytes=0-262143'),
}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "seed_decide")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {out}")
