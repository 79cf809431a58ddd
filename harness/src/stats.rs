//! Summary statistics for benchmark samples: median, mean, sample standard deviation,
//! Tukey-fence outliers (1.5 × IQR; Tukey, *Exploratory Data Analysis*, 1977), and Efron's
//! bootstrap percentile interval for the median and for a ratio of two medians (Efron &
//! Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13). Percentiles interpolate
//! linearly between order statistics exactly like numpy's default `method="linear"`.
//! Deterministic: resampling uses a seeded in-module generator, so equal inputs and
//! [`BootstrapOptions`] give bit-identical intervals on every machine.

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Tukey's conventional fence multiplier: points beyond 1.5 × IQR outside the quartiles.
const TUKEY_FENCE: f64 = 1.5;

/// How bootstrap intervals are computed.
///
/// Deserializing fills omitted fields with their defaults, so a configuration file can
/// override only what it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapOptions {
    /// Number of bootstrap resamples; must be at least 1. Cost is O(resamples × n).
    pub resamples: usize,
    /// Seed of the resampling generator. Fixed by default so reports are reproducible.
    pub seed: u64,
    /// Coverage of the interval, strictly between 0 and 1.
    pub confidence: f64,
}

impl BootstrapOptions {
    /// Enough resamples that the Monte-Carlo error of a 2.5 % tail endpoint is small next to
    /// the sampling error itself (Efron & Tibshirani suggest at least 1000 for intervals).
    pub const DEFAULT_RESAMPLES: usize = 2000;
    pub const DEFAULT_SEED: u64 = 0x5eed;
    pub const DEFAULT_CONFIDENCE: f64 = 0.95;

    fn validate(&self) -> Result<(), StatsError> {
        if self.resamples == 0 {
            return Err(StatsError::InvalidOptions {
                reason: "resamples must be at least 1",
            });
        }
        // Written so that NaN fails too.
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(StatsError::InvalidOptions {
                reason: "confidence must be strictly between 0 and 1",
            });
        }
        Ok(())
    }
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: Self::DEFAULT_RESAMPLES,
            seed: Self::DEFAULT_SEED,
            confidence: Self::DEFAULT_CONFIDENCE,
        }
    }
}

/// Descriptive statistics of one set of samples, as returned by [`summarize`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// 50th percentile (mean of the two middle values for even `n`).
    pub median: f64,
    pub mean: f64,
    /// Sample standard deviation (divisor `n - 1`); 0 when `n == 1`.
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
    /// Coefficient of variation `std_dev / mean`; `None` when the mean is exactly 0.
    pub cv: Option<f64>,
    /// Bootstrap percentile interval `(low, high)` of the median at
    /// [`BootstrapOptions::confidence`] (95 % by default, hence the name).
    /// Collapses to `(x, x)` for a single sample.
    pub ci95_median: (f64, f64),
    /// Indices into the input (ascending) of samples outside the Tukey fences
    /// `[Q1 - 1.5·IQR, Q3 + 1.5·IQR]`, quartiles as by [`percentile`].
    pub outliers: Vec<usize>,
}

/// Ratio of two groups' medians, as returned by [`ratio_of_medians`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// `median(a) / median(b)`.
    pub ratio: f64,
    /// Bootstrap percentile interval of the ratio at [`BootstrapOptions::confidence`],
    /// resampling both groups independently.
    pub ci95: (f64, f64),
    /// The interval excludes 1.0, i.e. the groups' medians differ at that confidence.
    pub significant: bool,
}

/// Which input of [`ratio_of_medians`] an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The numerator samples, `a`.
    A,
    /// The denominator samples, `b`.
    B,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Group::A => "a",
            Group::B => "b",
        })
    }
}

/// Why statistics could not be computed. Nothing in this module panics on bad input;
/// it is reported here instead.
#[derive(Debug, Clone, PartialEq)]
pub enum StatsError {
    /// No samples were given.
    Empty,
    /// The sample at `index` is NaN or infinite (the first such index is reported).
    NonFinite { index: usize },
    /// The sample at `index` is zero or negative where only positive values make sense:
    /// the denominator group of [`ratio_of_medians`].
    NonPositive { index: usize },
    /// The [`BootstrapOptions`] cannot be used.
    InvalidOptions { reason: &'static str },
    /// An error in one input group of [`ratio_of_medians`].
    InGroup {
        group: Group,
        source: Box<StatsError>,
    },
}

impl StatsError {
    fn in_group(self, group: Group) -> Self {
        StatsError::InGroup {
            group,
            source: Box::new(self),
        }
    }
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsError::Empty => f.write_str("no samples"),
            StatsError::NonFinite { index } => {
                write!(f, "sample {index} is not a finite number (NaN or infinite)")
            }
            StatsError::NonPositive { index } => {
                write!(f, "sample {index} is not positive")
            }
            StatsError::InvalidOptions { reason } => {
                write!(f, "invalid bootstrap options: {reason}")
            }
            StatsError::InGroup { group, source } => write!(f, "group {group}: {source}"),
        }
    }
}

impl std::error::Error for StatsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StatsError::InGroup { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// The `p`-th percentile (`p` in 0..=100) of ascending `sorted` data, interpolating
/// linearly between the two nearest order statistics: numpy's default
/// `np.percentile(x, p)` (Hyndman & Fan type 7).
///
/// `p` outside 0..=100 is clamped. Returns NaN when `sorted` is empty or `p` is NaN,
/// rather than panicking. The slice must already be sorted; this is not checked.
#[must_use]
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() || p.is_nan() {
        return f64::NAN;
    }
    let last = sorted.len() - 1;
    let position = (p / 100.0).clamp(0.0, 1.0) * last as f64;
    let below = position.floor();
    // `position` lies in [0, last], so both indices are in bounds.
    let lower = below as usize;
    let upper = (lower + 1).min(last);
    lerp(sorted[lower], sorted[upper], position - below)
}

/// Summarizes `samples` (in measurement order; outlier indices refer to it).
///
/// # Errors
/// [`StatsError::InvalidOptions`] for unusable `opts`, then [`StatsError::Empty`] for no
/// samples, or [`StatsError::NonFinite`] with the index of the first NaN or infinity.
pub fn summarize(samples: &[f64], opts: &BootstrapOptions) -> Result<Summary, StatsError> {
    opts.validate()?;
    let sorted = checked_sorted(samples)?;
    let n = sorted.len();
    let mean = mean(samples);
    let std_dev = sample_std_dev(samples, mean);
    Ok(Summary {
        n,
        median: percentile(&sorted, 50.0),
        mean,
        std_dev,
        min: sorted[0],
        max: sorted[n - 1],
        cv: (mean != 0.0).then(|| std_dev / mean),
        ci95_median: bootstrap_median_interval(&sorted, opts),
        outliers: tukey_outliers(samples, &sorted),
    })
}

/// Compares two groups, typically `a` = candidate and `b` = baseline run times: a ratio
/// above 1 means `a` is larger (slower).
///
/// Each of the `opts.resamples` rounds resamples `a` and `b` independently and takes the
/// ratio of their medians; the interval is the percentile interval of those ratios.
/// With a single sample per group the interval collapses to the point estimate, so
/// callers should demand a minimum sample count before trusting `significant`.
///
/// # Errors
/// [`StatsError::InvalidOptions`] for unusable `opts`; otherwise
/// [`StatsError::InGroup`] naming the group and wrapping [`StatsError::Empty`],
/// [`StatsError::NonFinite`], or, for `b` only, [`StatsError::NonPositive`]: a zero or
/// negative denominator would make resampled ratios infinite or meaningless.
pub fn ratio_of_medians(
    a: &[f64],
    b: &[f64],
    opts: &BootstrapOptions,
) -> Result<Ratio, StatsError> {
    opts.validate()?;
    let a_sorted = checked_sorted(a).map_err(|e| e.in_group(Group::A))?;
    let b_sorted = checked_sorted(b).map_err(|e| e.in_group(Group::B))?;
    if let Some(index) = b.iter().position(|&x| x <= 0.0) {
        return Err(StatsError::NonPositive { index }.in_group(Group::B));
    }

    let ratio = percentile(&a_sorted, 50.0) / percentile(&b_sorted, 50.0);
    let mut rng = Rng::from_seed(opts.seed);
    let mut scratch_a = Vec::with_capacity(a_sorted.len());
    let mut scratch_b = Vec::with_capacity(b_sorted.len());
    let mut ratios: Vec<f64> = (0..opts.resamples)
        .map(|_| {
            let median_a = resampled_median(&a_sorted, &mut rng, &mut scratch_a);
            let median_b = resampled_median(&b_sorted, &mut rng, &mut scratch_b);
            median_a / median_b
        })
        .collect();
    let ci95 = percentile_interval(&mut ratios, opts.confidence);
    Ok(Ratio {
        ratio,
        ci95,
        significant: ci95.0 > 1.0 || ci95.1 < 1.0,
    })
}

/// Width of the median's confidence interval relative to the median, `(high - low) / |median|`,
/// for adaptive sampling: keep measuring until this drops below e.g. 0.02 ("CI narrower
/// than 2 % of the median").
///
/// A zero median gives 0 for an empty-width interval and infinity otherwise, so a stopping
/// rule `width < target` stays well-defined.
#[must_use]
pub fn ci_width_ratio(s: &Summary) -> f64 {
    let (low, high) = s.ci95_median;
    let width = high - low;
    if s.median == 0.0 {
        return if width == 0.0 { 0.0 } else { f64::INFINITY };
    }
    width / s.median.abs()
}

/// Rejects empty or non-finite input and returns an ascending copy.
fn checked_sorted(samples: &[f64]) -> Result<Vec<f64>, StatsError> {
    if samples.is_empty() {
        return Err(StatsError::Empty);
    }
    if let Some(index) = samples.iter().position(|x| !x.is_finite()) {
        return Err(StatsError::NonFinite { index });
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(sorted)
}

/// Linear interpolation with numpy's `_lerp` formula, which interpolates from the nearer
/// end so that `t = 1` returns `high` exactly and results are monotone in `t`.
fn lerp(low: f64, high: f64, t: f64) -> f64 {
    // Equal ends short-circuit so infinite endpoints do not produce inf - inf = NaN.
    if t == 0.0 || low == high {
        return low;
    }
    let diff = high - low;
    if !diff.is_finite() {
        // Finite ends of opposite sign near f64::MAX overflow the difference.
        return low * (1.0 - t) + high * t;
    }
    if t >= 0.5 {
        high - diff * (1.0 - t)
    } else {
        low + diff * t
    }
}

fn mean(samples: &[f64]) -> f64 {
    let n = samples.len() as f64;
    let sum: f64 = samples.iter().sum();
    if sum.is_finite() {
        return sum / n;
    }
    // The plain sum of finite values overflowed; a running mean stays within their range.
    samples
        .iter()
        .enumerate()
        .fold(0.0, |mean, (i, &x)| mean + (x - mean) / (i + 1) as f64)
}

fn sample_std_dev(samples: &[f64], mean: f64) -> f64 {
    if samples.len() < 2 {
        return 0.0;
    }
    // Scaling deviations by the largest one keeps the squares from overflowing for huge
    // (but finite) values, the same trick as `hypot`.
    let scale = samples.iter().map(|x| (x - mean).abs()).fold(0.0, f64::max);
    if scale == 0.0 || !scale.is_finite() {
        return scale;
    }
    let sum_squares: f64 = samples.iter().map(|x| ((x - mean) / scale).powi(2)).sum();
    scale * (sum_squares / (samples.len() - 1) as f64).sqrt()
}

fn tukey_outliers(samples: &[f64], sorted: &[f64]) -> Vec<usize> {
    let q1 = percentile(sorted, 25.0);
    let q3 = percentile(sorted, 75.0);
    let reach = TUKEY_FENCE * (q3 - q1);
    let (low_fence, high_fence) = (q1 - reach, q3 + reach);
    samples
        .iter()
        .enumerate()
        .filter(|&(_, &x)| x < low_fence || x > high_fence)
        .map(|(index, _)| index)
        .collect()
}

fn bootstrap_median_interval(sorted: &[f64], opts: &BootstrapOptions) -> (f64, f64) {
    if let [only] = sorted {
        // Every resample of one value is that value; skip the work.
        return (*only, *only);
    }
    let mut rng = Rng::from_seed(opts.seed);
    let mut scratch = Vec::with_capacity(sorted.len());
    let mut medians: Vec<f64> = (0..opts.resamples)
        .map(|_| resampled_median(sorted, &mut rng, &mut scratch))
        .collect();
    percentile_interval(&mut medians, opts.confidence)
}

/// Median of one bootstrap resample (n draws with replacement) of `data`.
///
/// Callers pass the sorted copy rather than the input so that the result depends only on
/// the multiset of values, not on measurement order.
fn resampled_median(data: &[f64], rng: &mut Rng, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend((0..data.len()).map(|_| data[rng.below(data.len())]));
    median_in_place(scratch)
}

/// Median via selection, O(n) rather than a full sort: this runs once per resample.
/// Agrees with `percentile(sorted, 50.0)` bit for bit.
fn median_in_place(values: &mut [f64]) -> f64 {
    let upper_middle = values.len() / 2;
    let is_odd = values.len() % 2 == 1;
    let (below, &mut upper, _) = values.select_nth_unstable_by(upper_middle, f64::total_cmp);
    if is_odd {
        return upper;
    }
    let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    lerp(lower, upper, 0.5)
}

/// Efron's percentile interval: the central `confidence` share of the bootstrap replicates.
fn percentile_interval(replicates: &mut [f64], confidence: f64) -> (f64, f64) {
    replicates.sort_by(f64::total_cmp);
    let tail = 100.0 * (1.0 - confidence) / 2.0;
    (
        percentile(replicates, tail),
        percentile(replicates, 100.0 - tail),
    )
}

/// xoshiro256** (Blackman & Vigna, 2018), seeded through splitmix64.
///
/// Kept in-module so that intervals are reproducible for a seed with no dependency, and
/// cannot shift when an external crate changes its streams. Fast and statistically strong
/// enough for resampling; not for cryptography.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: [u64; 4],
}

impl Rng {
    /// Expands the seed with splitmix64, as the xoshiro authors recommend. Four outputs of
    /// splitmix64 come from distinct counter values through a bijection, so at most one is
    /// zero and the all-zero state (a fixed point of xoshiro) cannot occur.
    pub(crate) fn from_seed(seed: u64) -> Self {
        let mut counter = seed;
        Self {
            state: std::array::from_fn(|_| splitmix64(&mut counter)),
        }
    }

    fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform integer in `0..bound` (`bound > 0`), without modulo bias: Lemire's
    /// multiply-and-reject method ("Fast Random Integer Generation in an Interval", 2019).
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        debug_assert!(bound > 0, "empty range");
        let bound = bound as u64;
        let mut product = u128::from(self.next_u64()) * u128::from(bound);
        if (product as u64) < bound {
            // Only the lowest `2^64 mod bound` products are over-represented; redraw those.
            let threshold = bound.wrapping_neg() % bound;
            while (product as u64) < threshold {
                product = u128::from(self.next_u64()) * u128::from(bound);
            }
        }
        // The high word is < bound, which came from a usize.
        (product >> 64) as usize
    }
}

/// One step of splitmix64 (Steele, Lea & Flood, 2014; constants from Vigna's reference).
fn splitmix64(counter: &mut u64) -> u64 {
    *counter = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *counter;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
