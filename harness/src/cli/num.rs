//! Numbers from the command line, checked where clap parses them: finite, in range, or a
//! usage error (exit 2) that names the flag and the range. Nothing downstream sees a NaN, an
//! infinity or a value that would overflow a deadline.

use clap::builder::TypedValueParser;

/// The longest time any flag takes, in seconds (a day; the same bound as scenario files).
pub const MAX_SECS: f64 = crate::scenario::MAX_SECS;

/// A real number from `min` to `max` (either end itself refused when it is exclusive).
#[derive(Clone, Copy, Debug)]
pub struct FloatRange {
    pub min: f64,
    pub max: f64,
    pub min_exclusive: bool,
    pub max_exclusive: bool,
    /// What the number counts, for the message: "seconds", "percent".
    pub unit: &'static str,
}

impl FloatRange {
    /// A number strictly between `min` and `max` (a percentage, a probability).
    pub const fn open(min: f64, max: f64, unit: &'static str) -> FloatRange {
        FloatRange {
            min,
            max,
            min_exclusive: true,
            max_exclusive: true,
            unit,
        }
    }

    /// A positive number of seconds, at most `max`.
    pub const fn seconds(min: f64, max: f64) -> FloatRange {
        FloatRange {
            min,
            max,
            min_exclusive: min == 0.0,
            max_exclusive: false,
            unit: "seconds",
        }
    }

    pub fn check(&self, x: f64) -> Result<f64, String> {
        let low_ok = if self.min_exclusive {
            x > self.min
        } else {
            x >= self.min
        };
        let high_ok = if self.max_exclusive {
            x < self.max
        } else {
            x <= self.max
        };
        if x.is_finite() && low_ok && high_ok {
            return Ok(x);
        }
        let low = if self.min_exclusive {
            format!("above {}", self.min)
        } else {
            format!("from {}", self.min)
        };
        let high = if self.max_exclusive {
            format!("below {}", self.max)
        } else {
            format!("up to {}", self.max)
        };
        Err(format!("want a number of {} {low} {high}", self.unit))
    }
}

/// A clap value parser for a real number in `r`.
pub fn float(r: FloatRange) -> impl TypedValueParser<Value = f64> {
    move |s: &str| -> Result<f64, String> {
        let x: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("not a number; {}", r.check(f64::NAN).unwrap_err()))?;
        r.check(x)
    }
}

/// A clap value parser for an integer in `min..=max`.
pub fn int<T>(min: u64, max: u64) -> impl TypedValueParser<Value = T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| -> Result<T, String> {
        let want = || format!("want a whole number from {min} to {max}");
        let x: u64 = s.trim().parse().map_err(|_| want())?;
        if !(min..=max).contains(&x) {
            return Err(want());
        }
        T::try_from(x).map_err(|_| want())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_numbers_are_refused() {
        let r = FloatRange::seconds(0.0, MAX_SECS);
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -1.0,
            9.3e18,
        ] {
            assert!(r.check(bad).is_err(), "{bad}");
        }
        assert_eq!(r.check(0.5), Ok(0.5));
        assert_eq!(r.check(MAX_SECS), Ok(MAX_SECS));
    }
}
