//! One-sided two-sample permutation test on per-repetition values (Fisher, *The Design of
//! Experiments*, 1935; Good, *Permutation Tests*, 2000). The statistic is the difference of the
//! groups' mean logarithms (the log of the ratio of geometric means), which, unlike a
//! difference of medians, is strictly largest when the groups separate completely, so the
//! smallest attainable p-value is exactly 1 / C(n + m, n). Exact enumeration up to
//! [`EXACT_LIMIT`] arrangements; beyond that a seeded Monte-Carlo sample with the
//! (1 + count) / (1 + draws) estimate, which never under-states p (Phipson & Smyth, 2010).

use crate::stats::Rng;

/// Arrangements enumerated exactly (8 + 8 repetitions give 12,870).
pub const EXACT_LIMIT: u64 = 20_000;
/// Random arrangements drawn beyond [`EXACT_LIMIT`].
pub const DRAWS: usize = 19_999;

/// How a p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PValue {
    pub p: f64,
    /// The smallest p-value this test could give for these group sizes.
    pub min_attainable: f64,
}

/// P-value for "`current` is larger than `baseline`" (one-sided): the share of the
/// arrangements of the pooled values whose statistic is at least the observed one. Callers
/// flip the sign of the question for bigger-is-better metrics with `larger_is_bad = false`.
/// Returns `None` when either group is empty.
pub fn one_sided(
    baseline: &[f64],
    current: &[f64],
    larger_is_bad: bool,
    seed: u64,
) -> Option<PValue> {
    let (n_b, n_c) = (baseline.len(), current.len());
    if n_b == 0 || n_c == 0 {
        return None;
    }
    // Logs where every value is positive (ratios are what we compare); raw values otherwise.
    let all_positive = baseline.iter().chain(current).all(|&x| x > 0.0);
    let sign = if larger_is_bad { 1.0 } else { -1.0 };
    let pooled: Vec<f64> = baseline
        .iter()
        .chain(current)
        .map(|&x| sign * if all_positive { x.ln() } else { x })
        .collect();
    // With the pooled total fixed, mean(current) - mean(baseline) grows with the sum of the
    // values placed in `current`, so that sum is an equivalent statistic.
    let observed: f64 = pooled[n_b..].iter().sum();
    let scale = pooled.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1.0);
    let tolerance = 1e-9 * scale * n_c as f64;
    let at_least = |sum: f64| sum >= observed - tolerance;
    let total = binomial(n_b + n_c, n_c);
    match total {
        Some(t) if t <= EXACT_LIMIT => {
            let mut count = 0u64;
            for_each_subset_sum(&pooled, n_c, &mut |s| count += u64::from(at_least(s)));
            Some(PValue {
                p: count as f64 / t as f64,
                min_attainable: 1.0 / t as f64,
            })
        }
        _ => {
            let mut rng = Rng::from_seed(seed);
            let mut values = pooled.clone();
            let mut count = 0usize;
            for _ in 0..DRAWS {
                // A partial Fisher-Yates shuffle: the first n_c slots are a uniform subset.
                for i in 0..n_c {
                    let j = i + rng.below(values.len() - i);
                    values.swap(i, j);
                }
                count += usize::from(at_least(values[..n_c].iter().sum()));
            }
            Some(PValue {
                p: (1 + count) as f64 / (1 + DRAWS) as f64,
                min_attainable: 1.0 / (1 + DRAWS) as f64,
            })
        }
    }
}

/// Calls `f` with the sum of every `k`-subset of `values` (in lexicographic index order).
fn for_each_subset_sum(values: &[f64], k: usize, f: &mut dyn FnMut(f64)) {
    fn go(values: &[f64], start: usize, left: usize, sum: f64, f: &mut dyn FnMut(f64)) {
        if left == 0 {
            f(sum);
            return;
        }
        for i in start..=values.len() - left {
            go(values, i + 1, left - 1, sum + values[i], f);
        }
    }
    go(values, 0, k, 0.0, f);
}

/// C(n, k), or `None` when it does not fit in a u64.
fn binomial(n: usize, k: usize) -> Option<u64> {
    let k = k.min(n - k);
    let mut c: u64 = 1;
    for i in 0..k {
        c = c.checked_mul((n - i) as u64)? / (i as u64 + 1);
    }
    Some(c)
}

/// Holm's step-down adjustment (Holm, "A simple sequentially rejective multiple test
/// procedure", 1979): controls the family-wise error rate under any dependence.
/// Returns the adjusted p-values in the order given.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_separation_gives_the_smallest_attainable_p() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        let cur = [120.0, 121.0, 119.0, 120.5, 119.5];
        let p = one_sided(&base, &cur, true, 1).unwrap();
        assert_eq!(p.min_attainable, 1.0 / 252.0);
        assert_eq!(p.p, 1.0 / 252.0);
        // The other direction: nothing is worse, p is 1.
        let q = one_sided(&base, &cur, false, 1).unwrap();
        assert_eq!(q.p, 1.0);
    }

    #[test]
    fn identical_groups_give_a_large_p() {
        let x = [10.0, 11.0, 12.0, 13.0];
        let p = one_sided(&x, &x, true, 1).unwrap();
        assert!(p.p > 0.4, "{p:?}");
    }

    #[test]
    fn monte_carlo_beyond_the_exact_limit_is_seeded_and_sensible() {
        let base: Vec<f64> = (0..12).map(|i| 100.0 + f64::from(i)).collect();
        let cur: Vec<f64> = (0..12).map(|i| 130.0 + f64::from(i)).collect();
        let a = one_sided(&base, &cur, true, 7).unwrap();
        let b = one_sided(&base, &cur, true, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.p < 0.001, "{a:?}");
        assert_eq!(a.min_attainable, 1.0 / 20_000.0);
    }

    #[test]
    fn holm_matches_a_hand_computed_example() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        // Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06.
        for (got, want) in adj.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((got - want).abs() < 1e-12, "{adj:?}");
        }
    }

    #[test]
    fn binomial_and_empty_groups() {
        assert_eq!(binomial(10, 5), Some(252));
        assert_eq!(binomial(16, 8), Some(12_870));
        assert!(one_sided(&[], &[1.0], true, 1).is_none());
    }
}
