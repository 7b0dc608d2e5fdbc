//! Layer tests: the convolution (stride, padding, odd sizes, several sub-chunks per lane, 1x1
//! shortcuts) against naive f64 definitions, and batch norm against hand-computed values.

use super::graph::{ConvOp, NormOp};
use super::lanes::LaneScratch;
use super::norm::{Mode, NormParams};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn conv(
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    ih: usize,
    iw: usize,
) -> ConvOp {
    ConvOp {
        src: 0,
        w: 0,
        b: Some(1),
        cin,
        cout,
        k,
        stride,
        pad,
        ih,
        iw,
        oh: (ih + 2 * pad - k) / stride + 1,
        ow: (iw + 2 * pad - k) / stride + 1,
    }
}

/// Input pixel of output `(oy, ox)` and tap `(ky, kx)`, if inside the image.
fn tap(c: &ConvOp, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * c.stride + ky) as isize - c.pad as isize;
    let ix = (ox * c.stride + kx) as isize - c.pad as isize;
    (iy >= 0 && ix >= 0 && iy < c.ih as isize && ix < c.iw as isize)
        .then_some((iy as usize, ix as usize))
}

fn check_conv(c: &ConvOp, rows: usize) {
    let (inp, outp) = (c.ih * c.iw * c.cin, c.oh * c.ow * c.cout);
    let x = rand_vec(rows * inp, 1);
    let w = rand_vec(c.cout * c.cin * c.k * c.k, 2); // [out, in, kh, kw]
    let b = rand_vec(c.cout, 3);
    let dy = rand_vec(rows * outp, 4);
    let mut sc: [LaneScratch; 2] = Default::default();
    let mut wr = Vec::new();
    c.repack(&w, &mut wr);
    let mut y = vec![0.0; rows * outp];
    c.forward(&x, rows, &wr, Some(&b), &mut y, &mut sc);
    let (mut dx, mut gw, mut gb) = (
        vec![0.5; rows * inp],
        vec![0.25; w.len()],
        vec![0.125; c.cout],
    );
    let mut dwr = Vec::new();
    c.backward(
        &x,
        rows,
        &wr,
        &dy,
        Some((&mut dx, true)),
        &mut gw,
        Some(&mut gb),
        &mut sc,
        &mut dwr,
    );
    // f64 definitions (channels-last activations, PyTorch weight layout).
    let xi = |n: usize, iy: usize, ix: usize, ci: usize| ((n * c.ih + iy) * c.iw + ix) * c.cin + ci;
    let wi = |o: usize, ci: usize, ky: usize, kx: usize| ((o * c.cin + ci) * c.k + ky) * c.k + kx;
    let mut ry = vec![0.0f64; rows * outp];
    let mut rdx: Vec<f64> = vec![0.5; rows * inp];
    let mut rgw: Vec<f64> = vec![0.25; w.len()];
    let mut rgb: Vec<f64> = vec![0.125; c.cout];
    for n in 0..rows {
        for oy in 0..c.oh {
            for ox in 0..c.ow {
                for o in 0..c.cout {
                    let yi = ((n * c.oh + oy) * c.ow + ox) * c.cout + o;
                    let g = f64::from(dy[yi]);
                    let mut s = f64::from(b[o]);
                    rgb[o] += g;
                    for ky in 0..c.k {
                        for kx in 0..c.k {
                            let Some((iy, ix)) = tap(c, oy, ox, ky, kx) else {
                                continue;
                            };
                            for ci in 0..c.cin {
                                let (xv, wv) = (
                                    f64::from(x[xi(n, iy, ix, ci)]),
                                    f64::from(w[wi(o, ci, ky, kx)]),
                                );
                                s += xv * wv;
                                rdx[xi(n, iy, ix, ci)] += g * wv;
                                rgw[wi(o, ci, ky, kx)] += g * xv;
                            }
                        }
                    }
                    ry[yi] = s;
                }
            }
        }
    }
    let what = format!("{c:?} rows {rows}");
    for (name, got, want) in [
        ("y", &y, &ry),
        ("dx", &dx, &rdx),
        ("dw", &gw, &rgw),
        ("db", &gb, &rgb),
    ] {
        assert_eq!(got.len(), want.len());
        for (i, (&a, &r)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (f64::from(a) - r).abs() <= 1e-4 * (1.0 + r.abs()),
                "{what}: {name}[{i}] {a} vs {r}"
            );
        }
    }
}

#[test]
fn convolution_matches_the_definition() {
    // Odd sizes, stride 2 with padding, a batch of one.
    check_conv(&conv(3, 5, 3, 2, 1, 9, 7), 1);
    check_conv(&conv(3, 5, 3, 2, 1, 9, 7), 5);
    check_conv(&conv(2, 3, 3, 1, 1, 5, 6), 3);
    // 1x1 projection shortcuts (stride 2) and the pointwise path (stride 1).
    check_conv(&conv(4, 6, 1, 2, 0, 7, 8), 3);
    check_conv(&conv(4, 6, 1, 1, 0, 7, 8), 3);
    // Several sub-chunks per lane (3 samples of 32x32x8 patches per chunk, 7 rows).
    check_conv(&conv(8, 4, 3, 1, 1, 32, 32), 7);
}

#[test]
fn batch_norm_matches_hand_computed_values() {
    // One channel, two pixels, two samples: x = 1, 2 | 3, 4.
    let op = NormOp {
        src: 0,
        groups: None,
        gamma: 0,
        beta: 1,
        stats: None,
        c: 1,
        hw: 2,
    };
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let (gamma, beta) = ([2.0f32], [0.5f32]);
    let (mut rm, mut rv) = ([0.0f32], [1.0f32]);
    let mut sc: [LaneScratch; 2] = Default::default();
    let (mut saved, mut red, mut y) = (Vec::new(), Vec::new(), [0.0f32; 4]);
    let p = NormParams {
        gamma: &gamma,
        beta: &beta,
        stats: Some((&mut rm, &mut rv)),
    };
    op.forward(
        &x,
        2,
        p,
        Mode::Train { update: true },
        &mut y,
        &mut saved,
        &mut red,
        &mut sc,
    )
    .unwrap();
    // Batch mean 2.5, biased variance 1.25, unbiased 5/3.
    let s = (1.25f64 + 1e-5).sqrt();
    for (&a, &xv) in y.iter().zip(&x) {
        let want = (f64::from(xv) - 2.5) / s * 2.0 + 0.5;
        assert!((f64::from(a) - want).abs() < 1e-6, "{a} vs {want}");
    }
    assert!((rm[0] - 0.25).abs() < 1e-7, "running mean {}", rm[0]);
    assert!(
        (f64::from(rv[0]) - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6,
        "running var {}",
        rv[0]
    );
    // Training without update leaves the buffers alone.
    let p = NormParams {
        gamma: &gamma,
        beta: &beta,
        stats: Some((&mut rm, &mut rv)),
    };
    op.forward(
        &x,
        2,
        p,
        Mode::Train { update: false },
        &mut y,
        &mut saved,
        &mut red,
        &mut sc,
    )
    .unwrap();
    assert_eq!((rm[0], rv[0]), (0.25, (0.9 + 0.1 * 5.0f64 / 3.0) as f32));
    // Evaluation uses the running statistics.
    let p = NormParams {
        gamma: &gamma,
        beta: &beta,
        stats: Some((&mut rm, &mut rv)),
    };
    op.forward(&x, 2, p, Mode::Eval, &mut y, &mut saved, &mut red, &mut sc)
        .unwrap();
    let s = (f64::from(rv[0]) + 1e-5).sqrt();
    for (&a, &xv) in y.iter().zip(&x) {
        let want = (f64::from(xv) - 0.25) / s * 2.0 + 0.5;
        assert!((f64::from(a) - want).abs() < 1e-6, "eval {a} vs {want}");
    }
}
