//! Property-based tests (proptest) of the metrics: they keep their mathematical relations on
//! random accuracy matrices.

use clef_report::metrics;
use proptest::prelude::*;

/// `cases` cases, no regression files written next to the sources (CI runs from a clean
/// checkout; a failure prints its minimal input).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A random `t × t` accuracy matrix in [0, 1] (lower triangle and diagonal meaningful; the
/// upper triangle holds the accuracies on tasks not trained yet).
fn matrix() -> impl Strategy<Value = Vec<Vec<f64>>> {
    (1usize..7)
        .prop_flat_map(|t| proptest::collection::vec(proptest::collection::vec(0.0f64..=1.0, t), t))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn metrics_keep_their_relations(r in matrix()) {
        let t = r.len();
        let acc = metrics::acc(&r);
        prop_assert!((0.0..=1.0).contains(&acc));
        prop_assert!((0.0..=1.0).contains(&metrics::learning_accuracy(&r)));
        prop_assert!((0.0..=1.0).contains(&metrics::avg_incremental_accuracy(&r)));
        // The last incremental accuracy is ACC.
        prop_assert!((metrics::average_accuracy_at(&r, t - 1) - acc).abs() < 1e-12);
        match (metrics::bwt(&r), metrics::forgetting(&r)) {
            (Some(b), Some(f)) => {
                prop_assert!((-1.0..=1.0).contains(&b));
                prop_assert!((-1.0..=1.0).contains(&f));
                // The best earlier accuracy is at least the one right after learning.
                prop_assert!(f >= -b - 1e-12, "forgetting {} < -BWT {}", f, -b);
                // ACC = mean over the earlier tasks of (R[j][j] + change) and the last task.
                let diag_old: f64 = (0..t - 1).map(|j| r[j][j]).sum();
                let recon = (diag_old + b * (t - 1) as f64 + r[t - 1][t - 1]) / t as f64;
                prop_assert!((recon - acc).abs() < 1e-9, "{} vs {}", recon, acc);
            }
            (None, None) => prop_assert_eq!(t, 1),
            other => prop_assert!(false, "bwt/forgetting disagree on availability: {:?}", other),
        }
    }

    #[test]
    fn a_matrix_without_change_has_zero_bwt_and_forgetting(diag in proptest::collection::vec(0.0f64..=1.0, 2..7)) {
        let t = diag.len();
        // Each column constant from its task on: nothing is forgotten.
        let r: Vec<Vec<f64>> = (0..t)
            .map(|k| (0..t).map(|j| if j <= k { diag[j] } else { 0.5 }).collect())
            .collect();
        prop_assert_eq!(metrics::bwt(&r), Some(0.0));
        prop_assert_eq!(metrics::forgetting(&r), Some(0.0));
        prop_assert!((metrics::acc(&r) - diag.iter().sum::<f64>() / t as f64).abs() < 1e-12);
    }
}
