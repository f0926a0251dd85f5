//! Exact rational arithmetic on `i128` with overflow checks, for judging countdown equations.

use std::fmt;

/// Why an arithmetic step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArithError {
    /// A division by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A numerator or denominator left the `i128` range.
    #[error("a value is too large for exact arithmetic (beyond i128)")]
    Overflow,
}

/// A fraction `num / den` in lowest terms with `den > 0`, so equal values have equal fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    /// The integer `n`.
    pub fn int(n: i128) -> Self {
        Self { num: n, den: 1 }
    }

    /// `num / den` reduced to lowest terms.
    pub fn new(num: i128, den: i128) -> Result<Self, ArithError> {
        if den == 0 {
            return Err(ArithError::DivisionByZero);
        }
        // den ≠ 0, so g ≤ |den| ≤ 2^127 and the divisions below are exact.
        let g = gcd(num.unsigned_abs(), den.unsigned_abs());
        let g = i128::try_from(g).map_err(|_| ArithError::Overflow)?;
        let (mut num, mut den) = (num / g, den / g);
        if den < 0 {
            num = num.checked_neg().ok_or(ArithError::Overflow)?;
            den = den.checked_neg().ok_or(ArithError::Overflow)?;
        }
        Ok(Self { num, den })
    }

    /// The numerator (carries the sign).
    pub fn numer(self) -> i128 {
        self.num
    }

    /// The denominator (always positive).
    pub fn denom(self) -> i128 {
        self.den
    }

    /// `Some(n)` when the value is the integer `n`.
    pub fn as_int(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }

    /// The value rounded to the nearest `f64`, for display and metrics.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `a/b + c/d = (a·(d/g) + c·(b/g)) / (b/g·d)` with `g = gcd(b, d)`, keeping products small.
    pub fn checked_add(self, o: Self) -> Result<Self, ArithError> {
        let g = gcd(self.den as u128, o.den as u128) as i128;
        let l = self.num.checked_mul(o.den / g).ok_or(ArithError::Overflow)?;
        let r = o.num.checked_mul(self.den / g).ok_or(ArithError::Overflow)?;
        let num = l.checked_add(r).ok_or(ArithError::Overflow)?;
        let den = (self.den / g).checked_mul(o.den).ok_or(ArithError::Overflow)?;
        Self::new(num, den)
    }

    /// `a − b`.
    pub fn checked_sub(self, o: Self) -> Result<Self, ArithError> {
        self.checked_add(o.checked_neg()?)
    }

    /// `(a/b)·(c/d)`, cross-reducing first so intermediate products stay small.
    pub fn checked_mul(self, o: Self) -> Result<Self, ArithError> {
        let g1 = gcd(self.num.unsigned_abs(), o.den as u128).max(1) as i128;
        let g2 = gcd(o.num.unsigned_abs(), self.den as u128).max(1) as i128;
        let num = (self.num / g1).checked_mul(o.num / g2).ok_or(ArithError::Overflow)?;
        let den = (self.den / g2).checked_mul(o.den / g1).ok_or(ArithError::Overflow)?;
        Self::new(num, den)
    }

    /// `(a/b) / (c/d)`; dividing by zero is an error.
    pub fn checked_div(self, o: Self) -> Result<Self, ArithError> {
        if o.num == 0 {
            return Err(ArithError::DivisionByZero);
        }
        self.checked_mul(Self::new(o.den, o.num)?)
    }

    /// `−a`.
    pub fn checked_neg(self) -> Result<Self, ArithError> {
        Ok(Self { num: self.num.checked_neg().ok_or(ArithError::Overflow)?, den: self.den })
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 { write!(f, "{}", self.num) } else { write!(f, "{}/{}", self.num, self.den) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: i128) -> Rational {
        Rational::new(n, d).unwrap()
    }

    #[test]
    fn arithmetic_is_exact() {
        assert_eq!(r(2, 4), r(1, 2));
        assert_eq!(r(1, -2), r(-1, 2));
        assert_eq!(r(1, 3).checked_add(r(1, 6)).unwrap(), r(1, 2));
        assert_eq!(r(1, 3).checked_mul(Rational::int(3)).unwrap(), Rational::int(1));
        assert_eq!(
            Rational::int(1)
                .checked_div(Rational::int(3))
                .unwrap()
                .checked_mul(Rational::int(3))
                .unwrap()
                .as_int(),
            Some(1)
        );
        assert_eq!(r(3, 4).checked_sub(r(3, 4)).unwrap(), Rational::int(0));
        assert_eq!(r(7, 2).to_string(), "7/2");
        assert_eq!(Rational::int(1).checked_div(Rational::int(0)), Err(ArithError::DivisionByZero));
        assert_eq!(Rational::new(1, 0), Err(ArithError::DivisionByZero));
    }

    #[test]
    fn overflow_is_reported_not_wrapped() {
        let big = Rational::int(i128::MAX);
        assert_eq!(big.checked_add(Rational::int(1)), Err(ArithError::Overflow));
        assert_eq!(big.checked_mul(Rational::int(2)), Err(ArithError::Overflow));
        assert_eq!(Rational::int(i128::MIN).checked_neg(), Err(ArithError::Overflow));
        assert_eq!(Rational::int(1).checked_div(big).unwrap().checked_mul(big).unwrap(), Rational::int(1));
        assert_eq!(r(1, i128::MAX).checked_add(r(1, i128::MAX - 1)), Err(ArithError::Overflow));
    }
}
