//! GEMM views and calls (the `gemm` crate, single-threaded per call) and the two-way split
//! of large products that keeps results independent of the thread count.

/// Makes `buf` at least `n` long (allocating only when it must grow) and returns its first `n`
/// values. Their content is unspecified; callers overwrite them.
pub(super) fn grow(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub(super) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub(super) fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// True if every element lies inside `data` (and the strides fit an `isize`).
    pub(super) fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(r, c)| r.checked_add(c));
        let max = isize::MAX as usize;
        self.rs <= max && self.cs <= max && matches!(last, Some(i) if i < self.data.len())
    }
}

/// `dst = a · b` (or `dst += a · b` if `accumulate`), `dst` contiguous row-major
/// `a.rows x b.cols`, on the calling thread.
pub(super) fn matmul(dst: &mut [f32], a: View<'_>, b: View<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // These are internal invariants (every caller passes validated shapes); checking them here
    // is what makes the unsafe call below sound.
    assert!(
        b.rows == k && dst.len() == m * n && a.in_bounds() && b.in_bounds(),
        "native_mlp: inconsistent GEMM operands"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every index the GEMM touches is `i * rs + j * cs` with `i < rows`, `j < cols`
    // of the corresponding operand, which `in_bounds` (and `dst.len() == m * n` for the
    // row-major destination) places inside the borrowed slices; `dst` is uniquely borrowed and
    // cannot alias `a` or `b`; `in_bounds` also checked that the strides fit an `isize`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Products with fewer multiply-adds than this run on one thread: below it, handing half of
/// the work to another thread costs about as much as it saves.
pub(super) const SPLIT_MIN_MACS: usize = 1 << 20;

/// Runs `f(first_row, rows_chunk)` over `dst` (row-major, `width` values per row), either once
/// over all rows or, if `par` is set and the work (`macs_per_row` per row) is large enough, on
/// its two halves in parallel. The split depends only on the shape, so results do not depend on the thread count.
pub(super) fn split_rows(
    par: bool,
    dst: &mut [f32],
    width: usize,
    macs_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let rows = dst.len() / width.max(1);
    if !par || rows < 2 || rows.saturating_mul(macs_per_row) < SPLIT_MIN_MACS {
        f(0, dst);
        return;
    }
    let half = rows / 2;
    let (lo, hi) = dst.split_at_mut(half * width);
    if rayon::current_num_threads() < 2 {
        // Same halves, same results, without the task overhead.
        f(0, lo);
        f(half, hi);
    } else {
        rayon::join(|| f(0, lo), || f(half, hi));
    }
}

/// Runs `a` and `b`, in parallel if `par` is set, there is enough work (`macs` each) and more
/// than one thread.
pub(super) fn both(par: bool, macs: usize, a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if !par || macs < SPLIT_MIN_MACS || rayon::current_num_threads() < 2 {
        a();
        b();
    } else {
        rayon::join(a, b);
    }
}
