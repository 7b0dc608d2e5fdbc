//! The data-parallel split of a batch: two lanes of samples, fixed by the batch size alone.
//!
//! Every operation cuts its batch at `rows / 2` into two lanes run side by side with
//! `rayon::join` (or in turn on a one-thread pool). A lane's partial sums (weight gradients,
//! batch-norm statistics) are computed in sample order and the two lanes are then added lane 0
//! first, so the results are bit-identical for any thread count.

/// Per-lane reusable buffers.
#[derive(Default)]
pub(super) struct LaneScratch {
    /// im2col patches of a sub-chunk of samples.
    pub cols: Vec<f32>,
    /// Their gradient.
    pub dcols: Vec<f32>,
    /// Partial weight gradient of the lane.
    pub dw: Vec<f32>,
    /// Partial bias gradient of the lane.
    pub db: Vec<f32>,
    /// Partial f64 reductions (norm statistics).
    pub red: Vec<f64>,
}

/// Operations with fewer values than this per batch run both lanes on the calling thread.
const PAR_MIN: usize = 1 << 14;

/// `(first sample, samples)` of the two lanes of a batch of `rows`.
pub(super) fn bounds(rows: usize) -> [(usize, usize); 2] {
    let half = rows / 2;
    [(0, half), (half, rows - half)]
}

/// Runs `f(lane, first_sample, samples, out_part, scratch)` on both lanes, `out` holding
/// `per` values per sample; returns both results, lane 0 first. `work` (values touched, or
/// multiply-adds) decides whether a second thread is worth it.
pub(super) fn run<R: Send>(
    rows: usize,
    work: usize,
    out: &mut [f32],
    per: usize,
    scratch: &mut [LaneScratch; 2],
    f: impl Fn(usize, usize, usize, &mut [f32], &mut LaneScratch) -> R + Sync,
) -> [R; 2] {
    let [(a0, an), (b0, bn)] = bounds(rows);
    let (oa, ob) = out[..rows * per].split_at_mut(an * per);
    let (sa, sb) = scratch.split_at_mut(1);
    let (sa, sb) = (&mut sa[0], &mut sb[0]);
    if work.max(rows * per) < PAR_MIN || rayon::current_num_threads() < 2 {
        let ra = f(0, a0, an, oa, sa);
        let rb = f(1, b0, bn, ob, sb);
        return [ra, rb];
    }
    let (ra, rb) = rayon::join(|| f(0, a0, an, oa, sa), || f(1, b0, bn, ob, sb));
    [ra, rb]
}

/// Runs `f(first_sample, samples, scratch)` on both lanes (no per-sample output).
pub(super) fn run_ro<R: Send>(
    rows: usize,
    work: usize,
    scratch: &mut [LaneScratch; 2],
    f: impl Fn(usize, usize, &mut LaneScratch) -> R + Sync,
) -> [R; 2] {
    let [(a0, an), (b0, bn)] = bounds(rows);
    let (sa, sb) = scratch.split_at_mut(1);
    let (sa, sb) = (&mut sa[0], &mut sb[0]);
    if work < PAR_MIN || rayon::current_num_threads() < 2 {
        let ra = f(a0, an, sa);
        let rb = f(b0, bn, sb);
        return [ra, rb];
    }
    let (ra, rb) = rayon::join(|| f(a0, an, sa), || f(b0, bn, sb));
    [ra, rb]
}

/// Adds the lanes' partial sums `scratch[l].<buf>[..n]` (only of lanes with samples) into
/// `dst`: `dst += lane0 + lane1`, in that order.
pub(super) fn add_partials(
    dst: &mut [f32],
    rows: usize,
    scratch: &[LaneScratch; 2],
    buf: impl Fn(&LaneScratch) -> &[f32],
) {
    let [(_, an), (_, bn)] = bounds(rows);
    let n = dst.len();
    match (an > 0, bn > 0) {
        (true, true) => {
            let (a, b) = (&buf(&scratch[0])[..n], &buf(&scratch[1])[..n]);
            for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *d += x + y;
            }
        }
        (false, true) => {
            for (d, &y) in dst.iter_mut().zip(&buf(&scratch[1])[..n]) {
                *d += y;
            }
        }
        (true, false) => {
            for (d, &x) in dst.iter_mut().zip(&buf(&scratch[0])[..n]) {
                *d += x;
            }
        }
        (false, false) => {}
    }
}

/// The sum of the lanes' f64 partials `scratch[l].red[..n]` (lane 0 first) into `out`.
pub(super) fn sum_red(out: &mut Vec<f64>, n: usize, rows: usize, scratch: &[LaneScratch; 2]) {
    let [(_, an), (_, bn)] = bounds(rows);
    out.clear();
    out.resize(n, 0.0);
    for (l, has) in [an > 0, bn > 0].into_iter().enumerate() {
        if has {
            for (o, &v) in out.iter_mut().zip(&scratch[l].red[..n]) {
                *o += v;
            }
        }
    }
}
