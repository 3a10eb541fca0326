// top_k.wgsl — the KT largest logits of the last row (value, index) and a count of non-finite
// logits, so that a decode step reads back a few hundred bytes instead of the row [V].
//
// Order: (v, i) comes before (v', i') when v > v', or v == v' and i < i' — the order of
// numpy's np.argmax (first index on ties) and of a stable sort by -logit. top[0] is therefore
// np.argmax(logits[N-1]) exactly. Temperature is NOT applied here: the host divides the KT
// values by T in float32 as glassbox.sampling does (dividing by T > 0 keeps the order, and
// numpy's division is correctly rounded where WGSL's need not be).
// numpy: glassbox.reference.top_k (np.lexsort((ids, -logits))[:KT]).
//
// Threads: one workgroup of WG invocations (dispatch (1, 1, 1)); invocation j reads items
// j, j + WG, ... of the row. Each finite logit maps to a u32 key whose order is the float
// order (-0 as +0, so they tie as in numpy); non-finite logits are counted and never picked
// (the host then refuses the row, as glassbox.sampling does).
//   1. Radix select, 8 bits a pass, 4 passes: a 256-bin histogram (workgroup atomics) of the
//      next byte of the keys matching the bytes chosen so far; invocation 0 walks the bins
//      from the top to the one holding the KT-th largest key. After the 4 passes, tau is the
//      KT-th largest key and `need` says how many keys equal to tau belong in the top.
//   2. Keys above tau go to the list through an atomic slot counter; the `need` lowest-index
//      keys equal to tau follow (each invocation scans a contiguous range, offsets from the
//      counts of the ranges before it, so ties keep index order).
//   3. Rank sort of the (at most KT) listed items: an item's place is how many come before it.
// Barriers are reached by every invocation the same number of times (uniform control flow).

// #include params

override V: u32;          // vocabulary
override KT: u32 = 64u;   // how many of the largest logits are kept (<= WG)
override R0: u32 = 0u;    // the first row of the bound logits block
override WG: u32 = 256u;  // invocations (a power of two, >= 256: one per histogram bin)

const NONE: u32 = 0xffffffffu;  // "no item" index in top

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // [rows, V] (a block of [N, V])
@group(0) @binding(2) var<storage, read_write> top: array<u32>;  // [KT] value bits, [KT] ids, [1] count

var<workgroup> hist: array<atomic<u32>, WG>;  // bins of a pass; then each range's tie count
var<workgroup> slots: atomic<u32>;            // items listed so far
var<workgroup> bad: atomic<u32>;              // non-finite logits
var<workgroup> prefix: u32;                   // the key bytes chosen so far
var<workgroup> need: u32;                     // of the top, how many are still to be found under prefix
var<workgroup> list_v: array<f32, KT>;
var<workgroup> list_i: array<u32, KT>;

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// A u32 with the order of the floats: flip every bit of a negative, the sign bit of the rest.
fn key(v: f32) -> u32 {
    let bits = bitcast<u32>(select(v, 0.0, v == 0.0));
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// Whether (v, i) comes strictly before (w, j).
fn before(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let row = (params.N - 1u - R0) * V;
    if (lane == 0u) {
        atomicStore(&slots, 0u);
        atomicStore(&bad, 0u);
        prefix = 0u;
        need = KT;
    }

    // 1. Radix select of the KT-th largest key.
    var mask = 0u;
    for (var level = 0u; level < 4u; level++) {
        let shift = 24u - 8u * level;
        atomicStore(&hist[lane], 0u);
        workgroupBarrier();
        let chosen = prefix;
        for (var c = lane; c < V; c += WG) {
            let x = logits[row + c];
            if (!finite(x)) {
                if (level == 0u) {
                    atomicAdd(&bad, 1u);
                }
                continue;
            }
            let k = key(x);
            if ((k & mask) == chosen) {
                atomicAdd(&hist[(k >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (lane == 0u && need > 0u) {
            var above = 0u;
            var bin = 256u;
            loop {
                if (bin == 0u) {
                    break;
                }
                bin -= 1u;
                let here = atomicLoad(&hist[bin]);
                if (above + here >= need) {
                    break;
                }
                above += here;
                if (bin == 0u) {
                    bin = 256u;  // fewer than `need` keys in all: take every one
                    break;
                }
            }
            if (bin == 256u) {
                prefix = 0u;  // key 0 is below every finite key: all of them are "above tau"
                need = 0u;
            } else {
                prefix = chosen | (bin << shift);
                need -= above;
            }
        }
        workgroupBarrier();
        mask |= 255u << shift;
    }
    let tau = prefix;
    let ties = need;

    // 2. List the keys above tau, then the `ties` lowest-index keys equal to tau.
    for (var c = lane; c < V; c += WG) {
        let x = logits[row + c];
        if (finite(x) && key(x) > tau) {
            let slot = atomicAdd(&slots, 1u);
            list_v[slot] = x;
            list_i[slot] = c;
        }
    }
    let range = (V + WG - 1u) / WG;
    let lo = min(V, lane * range);
    let hi = min(V, lo + range);
    var mine = 0u;
    for (var c = lo; c < hi; c++) {
        let x = logits[row + c];
        if (tau != 0u && finite(x) && key(x) == tau) {
            mine += 1u;
        }
    }
    atomicStore(&hist[lane], mine);
    workgroupBarrier();
    let above = atomicLoad(&slots);
    var offset = 0u;
    for (var j = 0u; j < lane; j++) {
        offset += atomicLoad(&hist[j]);
    }
    for (var c = lo; c < hi; c++) {
        let x = logits[row + c];
        if (offset < ties && tau != 0u && finite(x) && key(x) == tau) {
            list_v[above + offset] = x;
            list_i[above + offset] = c;
            offset += 1u;
        }
    }
    workgroupBarrier();

    // 3. Rank sort: item i goes to the place of the number of items before it.
    let m = above + ties;
    if (lane < m) {
        var rank = 0u;
        for (var j = 0u; j < m; j++) {
            if (before(list_v[j], list_i[j], list_v[lane], list_i[lane])) {
                rank += 1u;
            }
        }
        top[rank] = bitcast<u32>(list_v[lane]);
        top[KT + rank] = list_i[lane];
    }
    if (lane >= m && lane < KT) {
        top[KT + lane] = NONE;
    }
    if (lane == 0u) {
        top[2u * KT] = atomicLoad(&bad);
    }
}
