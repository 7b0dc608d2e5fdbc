//! `Network::ntk_gram` on the convolutional backbones against an f64 reference: the Jacobian of
//! one logit of the reference network (`common/cnn_ref.rs`, evaluation mode: batch norm with
//! its running statistics) by central finite differences over every trainable tensor, then
//! `J(a_i) · J(b_j)ᵀ`. Also: symmetry of `K(A, A)`, gradients and running statistics left as
//! they were, the MLP default unchanged, bad arguments refused.

mod common;

use clef_backend::{
    build_network, Activation, ConvNetSpec, ConvPool, ImageShape, Init, Inputs, ModelSpec, Network,
    Norm, ParamRole, ResNetSpec,
};
use common::cnn_ref::RefNet;
use common::Rng;

fn img(c: usize, h: usize, w: usize) -> ImageShape {
    ImageShape {
        channels: c,
        height: h,
        width: w,
    }
}

fn convnet(input: ImageShape, channels: &[usize], hidden: &[usize], norm: Norm) -> ModelSpec {
    ModelSpec::ConvNet(ConvNetSpec {
        input,
        channels: channels.to_vec(),
        hidden: hidden.to_vec(),
        output: 3,
        norm,
        activation: Activation::Tanh,
        init: Init::TorchDefault,
        pool: ConvPool::Flatten,
    })
}

/// [`convnet`] with global average pooling before the dense part.
fn convnet_avg(input: ImageShape, channels: &[usize], norm: Norm) -> ModelSpec {
    match convnet(input, channels, &[], norm) {
        ModelSpec::ConvNet(c) => ModelSpec::ConvNet(ConvNetSpec {
            pool: ConvPool::Avg,
            ..c
        }),
        other => other,
    }
}

fn resnet(input: ImageShape, norm: Norm) -> ModelSpec {
    ModelSpec::ResNet(ResNetSpec {
        input,
        width: 2,
        blocks: [1, 1, 1, 1],
        output: 3,
        norm,
        init: Init::TorchDefault,
    })
}

/// [`common::random_net`] with this file's weight noise.
fn random_net(spec: &ModelSpec, seed: u64) -> Box<dyn Network> {
    common::random_net(spec, seed, 0.3)
}

/// `rows × P` Jacobian of logit `c` over every trainable tensor, by central differences of
/// the f64 reference in evaluation mode.
fn fd_jacobian(
    net: &dyn Network,
    spec: &ModelSpec,
    x: &[f32],
    rows: usize,
    c: usize,
) -> Vec<Vec<f64>> {
    let mut r = RefNet::new(spec, net.params());
    r.train = false;
    let k = spec.output();
    let h = 1e-5;
    let mut jac = vec![Vec::new(); rows];
    for info in net.params().infos() {
        if info.role == ParamRole::Buffer {
            continue;
        }
        for j in 0..info.numel() {
            let orig = r.p[&info.name][j];
            r.p.get_mut(&info.name).unwrap()[j] = orig + h;
            let (_, up) = r.forward(x, rows);
            r.p.get_mut(&info.name).unwrap()[j] = orig - h;
            let (_, down) = r.forward(x, rows);
            r.p.get_mut(&info.name).unwrap()[j] = orig;
            for (row, jr) in jac.iter_mut().enumerate() {
                jr.push((up[row * k + c] - down[row * k + c]) / (2.0 * h));
            }
        }
    }
    jac
}

#[test]
fn conv_ntk_matches_finite_difference_jacobians() {
    let cases = [
        convnet(img(2, 6, 5), &[3, 4], &[4], Norm::Batch),
        convnet(img(1, 6, 6), &[2, 4, 4], &[], Norm::Group { groups: 2 }),
        convnet(img(1, 5, 5), &[2, 3], &[], Norm::None),
        convnet_avg(img(1, 6, 6), &[2, 3], Norm::Batch),
        resnet(img(1, 8, 8), Norm::Batch),
        resnet(img(2, 6, 6), Norm::Group { groups: 2 }),
    ];
    for (n, spec) in cases.iter().enumerate() {
        let mut net = random_net(spec, 3 + n as u64);
        let d = spec.input_dim();
        let mut rng = Rng(100 + n as u64);
        let (ra, rb) = (2, 3);
        let a = rng.vec(ra * d, 1.0);
        let b = rng.vec(rb * d, 1.0);
        // Gradients and parameters must come back untouched.
        let grads_before: Vec<f32> = (0..net.params().len())
            .flat_map(|i| {
                let g = rng.vec(net.params().grad(i).len(), 1.0);
                net.params_mut().grad_mut(i).copy_from_slice(&g);
                g
            })
            .collect();
        let values_before = net.params().clone();
        for c in [0, 2] {
            let mut k = vec![0.0; ra * rb];
            net.ntk_gram(
                Inputs::new(&a, ra, d).unwrap(),
                Inputs::new(&b, rb, d).unwrap(),
                c,
                &mut k,
            )
            .unwrap();
            let ja = fd_jacobian(net.as_ref(), spec, &a, ra, c);
            let jb = fd_jacobian(net.as_ref(), spec, &b, rb, c);
            for i in 0..ra {
                for j in 0..rb {
                    let want: f64 = ja[i].iter().zip(&jb[j]).map(|(x, y)| x * y).sum();
                    let got = k[i * rb + j];
                    assert!(
                        (got - want).abs() <= 1e-4 + 1e-3 * want.abs(),
                        "case {n} output {c}: K[{i}][{j}] = {got}, finite differences {want}"
                    );
                }
            }
            // K(A, A) through the shared-input path: symmetric and equal to J_A J_Aᵀ.
            let mut kaa = vec![0.0; ra * ra];
            let ia = Inputs::new(&a, ra, d).unwrap();
            net.ntk_gram(ia, ia, c, &mut kaa).unwrap();
            for i in 0..ra {
                for j in 0..ra {
                    let want: f64 = ja[i].iter().zip(&ja[j]).map(|(x, y)| x * y).sum();
                    assert!(
                        (kaa[i * ra + j] - want).abs() <= 1e-4 + 1e-3 * want.abs(),
                        "case {n}: K(A,A)[{i}][{j}] = {}, finite differences {want}",
                        kaa[i * ra + j]
                    );
                    assert_eq!(kaa[i * ra + j], kaa[j * ra + i]);
                }
            }
        }
        let grads_after: Vec<f32> = (0..net.params().len())
            .flat_map(|i| net.params().grad(i).to_vec())
            .collect();
        assert_eq!(grads_after, grads_before, "case {n}: gradients changed");
        for i in 0..values_before.len() {
            assert_eq!(
                net.params().value(i),
                values_before.value(i),
                "case {n}: {} changed",
                net.params().infos()[i].name
            );
        }
    }
}

#[test]
fn conv_ntk_refuses_bad_arguments() {
    let spec = convnet(img(1, 4, 4), &[2, 2], &[], Norm::Batch);
    let mut net = random_net(&spec, 1);
    let x = vec![0.5f32; 2 * 16];
    let ix = Inputs::new(&x, 2, 16).unwrap();
    let mut k = vec![0.0; 4];
    let e = net.ntk_gram(ix, ix, 3, &mut k).unwrap_err().to_string();
    assert!(e.contains("ntk output unit"), "{e}");
    let mut short = vec![0.0; 3];
    let e = net.ntk_gram(ix, ix, 0, &mut short).unwrap_err().to_string();
    assert!(e.contains("ntk output buffer"), "{e}");
    let bad = Inputs::new(&x, 4, 8).unwrap();
    let e = net
        .ntk_gram(bad, bad, 0, &mut [0.0; 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("input columns"), "{e}");
}

#[test]
fn the_mlp_default_is_the_factorised_kernel() {
    let spec = ModelSpec::Mlp(common::spec(5, &[4], 3, Activation::Relu));
    let mut net = build_network(&spec, 7).unwrap();
    let x = Rng(9).vec(3 * 5, 1.0);
    let ix = Inputs::new(&x, 3, 5).unwrap();
    let mut k = vec![0.0; 9];
    net.ntk_gram(ix, ix, 1, &mut k).unwrap();
    let mut want = vec![0.0; 9];
    clef_backend::ntk::ntk_gram(&spec, net.params(), ix, ix, 1, &mut want).unwrap();
    assert_eq!(k, want);
}
