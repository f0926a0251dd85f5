//! A small parser for countdown equations: integers, `+ - * /`, unary signs and parentheses.
//!
//! It accepts the subset of Python expressions that TinyZero's character filter lets through and
//! that the prompt allows, and evaluates it exactly (see [`super::Rational`]). No `eval`.
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/') unary)*
//! unary   := ('+' | '-') unary | primary
//! primary := integer | '(' expr ')'
//! ```

use super::rational::{ArithError, Rational};
use std::fmt;

/// The longest equation (in bytes) we parse; longer ones are malformed.
pub const MAX_LEN: usize = 1024;
/// The deepest nesting of parentheses and unary signs we parse.
pub const MAX_DEPTH: usize = 100;

/// Why an equation could not be parsed or evaluated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// Nothing but whitespace.
    #[error("empty equation")]
    Empty,
    /// Longer than [`MAX_LEN`] bytes.
    #[error("equation of {0} bytes is longer than the limit of {MAX_LEN}")]
    TooLong(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("equation nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A character outside digits, `+-*/()` and spaces (this includes `.` and other scripts' digits).
    #[error("character {ch:?} at byte {at} is not allowed")]
    BadChar { ch: char, at: usize },
    /// `**` (power) is not one of the four operations.
    #[error("`**` at byte {0} is not allowed")]
    Power(usize),
    /// `//` (floor division) is not one of the four operations.
    #[error("`//` at byte {0} is not allowed")]
    FloorDivision(usize),
    /// A literal such as `05`, which Python rejects.
    #[error("number with a leading zero at byte {0}")]
    LeadingZero(usize),
    /// A token where another was needed (for example `2 3`, `2(3)` or `(1+2`).
    #[error("unexpected {found} at byte {at}")]
    Unexpected { found: String, at: usize },
    /// Division by zero or a value beyond `i128` while evaluating.
    #[error(transparent)]
    Arith(#[from] ArithError),
}

/// A binary operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (exact, not floor)
    Div,
}

impl BinOp {
    fn symbol(self) -> char {
        match self {
            BinOp::Add => '+',
            BinOp::Sub => '-',
            BinOp::Mul => '*',
            BinOp::Div => '/',
        }
    }

    fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
        }
    }

    /// `x op y` on exact rationals.
    pub fn apply(self, x: Rational, y: Rational) -> Result<Rational, ArithError> {
        match self {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div => x.checked_div(y),
        }
    }
}

/// A parsed equation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// A non-negative integer literal.
    Num(i128),
    /// Unary minus.
    Neg(Box<Expr>),
    /// Unary plus (kept so that printing round-trips).
    Pos(Box<Expr>),
    /// A binary operation.
    Bin(BinOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The exact value.
    pub fn eval(&self) -> Result<Rational, ArithError> {
        match self {
            Expr::Num(n) => Ok(Rational::int(*n)),
            Expr::Neg(e) => e.eval()?.checked_neg(),
            Expr::Pos(e) => e.eval(),
            Expr::Bin(op, l, r) => op.apply(l.eval()?, r.eval()?),
        }
    }

    /// The integer literals in reading order.
    pub fn literals(&self) -> Vec<i128> {
        let mut out = Vec::new();
        self.collect_literals(&mut out);
        out
    }

    fn collect_literals(&self, out: &mut Vec<i128>) {
        match self {
            Expr::Num(n) => out.push(*n),
            Expr::Neg(e) | Expr::Pos(e) => e.collect_literals(out),
            Expr::Bin(_, l, r) => {
                l.collect_literals(out);
                r.collect_literals(out);
            }
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Bin(op, ..) => op.precedence(),
            Expr::Neg(_) | Expr::Pos(_) => 3,
            Expr::Num(_) => 4,
        }
    }
}

/// Prints with the fewest parentheses that keep the value: a child is wrapped when it binds more
/// loosely than its parent, or equally on the right of `-` or `/` (`a-(b-c)`, `a/(b*c)`).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wrap = |f: &mut fmt::Formatter<'_>, e: &Expr, paren: bool| {
            if paren { write!(f, "({e})") } else { write!(f, "{e}") }
        };
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Neg(e) | Expr::Pos(e) => {
                f.write_str(if matches!(self, Expr::Neg(_)) { "-" } else { "+" })?;
                wrap(f, e, e.precedence() < 3)
            }
            Expr::Bin(op, l, r) => {
                let p = op.precedence();
                wrap(f, l, l.precedence() < p)?;
                write!(f, "{}", op.symbol())?;
                let right_paren =
                    r.precedence() < p || (r.precedence() == p && matches!(op, BinOp::Sub | BinOp::Div));
                wrap(f, r, right_paren)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Num(i128),
    Op(BinOp),
    Open,
    Close,
}

/// Python's inline whitespace (newlines never reach the parser: TinyZero keeps the last line).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\x0c')
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let tok = match c {
            b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let digits = &src[start..i];
                // Python rejects `05` but accepts `0` and `00`.
                if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
                    return Err(ExprError::LeadingZero(start));
                }
                let n = digits.parse::<i128>().map_err(|_| ArithError::Overflow)?;
                toks.push((Tok::Num(n), start));
                continue;
            }
            b'+' => Tok::Op(BinOp::Add),
            b'-' => Tok::Op(BinOp::Sub),
            b'*' if bytes.get(i + 1) == Some(&b'*') => return Err(ExprError::Power(i)),
            b'*' => Tok::Op(BinOp::Mul),
            b'/' if bytes.get(i + 1) == Some(&b'/') => return Err(ExprError::FloorDivision(i)),
            b'/' => Tok::Op(BinOp::Div),
            b'(' => Tok::Open,
            b')' => Tok::Close,
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                if is_space(ch) {
                    i += ch.len_utf8();
                    continue;
                }
                return Err(ExprError::BadChar { ch, at: i });
            }
        };
        toks.push((tok, i));
        i += 1;
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.pos).map(|t| t.0)
    }

    fn unexpected(&self) -> ExprError {
        match self.toks.get(self.pos) {
            Some((t, at)) => ExprError::Unexpected { found: format!("{t:?}"), at: *at },
            None => ExprError::Unexpected { found: "end of equation".into(), at: self.end },
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut lhs = self.term(depth)?;
        while let Some(Tok::Op(op @ (BinOp::Add | BinOp::Sub))) = self.peek() {
            self.pos += 1;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(self.term(depth)?));
        }
        Ok(lhs)
    }

    fn term(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut lhs = self.unary(depth)?;
        while let Some(Tok::Op(op @ (BinOp::Mul | BinOp::Div))) = self.peek() {
            self.pos += 1;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(self.unary(depth)?));
        }
        Ok(lhs)
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        match self.peek() {
            Some(Tok::Op(op @ (BinOp::Add | BinOp::Sub))) => {
                if depth >= MAX_DEPTH {
                    return Err(ExprError::TooDeep);
                }
                self.pos += 1;
                let inner = Box::new(self.unary(depth + 1)?);
                Ok(if op == BinOp::Sub { Expr::Neg(inner) } else { Expr::Pos(inner) })
            }
            _ => self.primary(depth),
        }
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        match self.peek() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Num(n))
            }
            Some(Tok::Open) => {
                if depth >= MAX_DEPTH {
                    return Err(ExprError::TooDeep);
                }
                self.pos += 1;
                let inner = self.expr(depth + 1)?;
                if self.peek() != Some(Tok::Close) {
                    return Err(self.unexpected());
                }
                self.pos += 1;
                Ok(inner)
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// Parses an equation (after the caller has trimmed it); see the module docs for the grammar.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_LEN {
        return Err(ExprError::TooLong(src.len()));
    }
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Err(ExprError::Empty);
    }
    let mut p = Parser { toks, pos: 0, end: src.len() };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(p.unexpected());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Result<Rational, ExprError> {
        Ok(parse(s)?.eval()?)
    }

    #[test]
    fn precedence_associativity_and_signs() {
        assert_eq!(value("1+2*3").unwrap(), Rational::int(7));
        assert_eq!(value("(1+2)*3").unwrap(), Rational::int(9));
        assert_eq!(value("8-3-2").unwrap(), Rational::int(3));
        assert_eq!(value("8/4/2").unwrap(), Rational::int(1));
        assert_eq!(value("1/3+1/6").unwrap(), Rational::new(1, 2).unwrap());
        assert_eq!(value("-3+5").unwrap(), Rational::int(2));
        assert_eq!(value("2--3").unwrap(), Rational::int(5));
        assert_eq!(value("2*-3").unwrap(), Rational::int(-6));
        assert_eq!(value(" ( 1 + 2 ) / 3 ").unwrap(), Rational::int(1));
        assert_eq!(value("00+7").unwrap(), Rational::int(7));
        assert_eq!(parse("(3+5)*(7-2)").unwrap().literals(), vec![3, 5, 7, 2]);
    }

    #[test]
    fn rejects() {
        assert_eq!(parse("2**3"), Err(ExprError::Power(1)));
        assert_eq!(parse("7//2"), Err(ExprError::FloorDivision(1)));
        assert_eq!(parse("05+1"), Err(ExprError::LeadingZero(0)));
        assert_eq!(parse("1.5*2"), Err(ExprError::BadChar { ch: '.', at: 1 }));
        assert_eq!(parse("٣+4"), Err(ExprError::BadChar { ch: '٣', at: 0 }));
        assert_eq!(parse("__import__('os')"), Err(ExprError::BadChar { ch: '_', at: 0 }));
        assert_eq!(parse("  "), Err(ExprError::Empty));
        assert!(matches!(parse("2 3"), Err(ExprError::Unexpected { at: 2, .. })));
        assert!(matches!(parse("2(3)"), Err(ExprError::Unexpected { .. })));
        assert!(matches!(parse("(1+2"), Err(ExprError::Unexpected { .. })));
        assert!(matches!(parse("1+"), Err(ExprError::Unexpected { .. })));
        assert!(matches!(parse(")("), Err(ExprError::Unexpected { .. })));
        assert_eq!(parse(&"9".repeat(50)), Err(ExprError::Arith(ArithError::Overflow)));
        assert_eq!(parse(&"1+".repeat(600)), Err(ExprError::TooLong(1200)));
        let deep = format!("{}1{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert_eq!(parse(&deep), Err(ExprError::TooDeep));
        let ok = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(value(&ok).unwrap(), Rational::int(1));
        assert_eq!(parse(&"-".repeat(MAX_DEPTH + 1)), Err(ExprError::TooDeep));
        assert_eq!(value("1/(2-2)"), Err(ExprError::Arith(ArithError::DivisionByZero)));
        assert_eq!(value("99999999999999999999*99999999999999999999"), Err(ArithError::Overflow.into()));
    }

    #[test]
    fn printing_round_trips() {
        for src in ["(3+5)*(7-2)", "8-(3-2)", "8/(4/2)", "8/(4*2)", "1+2*3", "-(1+2)*3", "1-(-2)", "2*(3/4)"]
        {
            let e = parse(src).unwrap();
            let printed = e.to_string();
            let again = parse(&printed).unwrap();
            assert_eq!(again.eval(), e.eval(), "{src} -> {printed}");
            assert_eq!(again.literals(), e.literals(), "{src} -> {printed}");
        }
        assert_eq!(parse("(3+5)*(7-2)").unwrap().to_string(), "(3+5)*(7-2)");
        assert_eq!(parse("((1+2))+(3)").unwrap().to_string(), "1+2+3");
        assert_eq!(parse("8-(3-2)").unwrap().to_string(), "8-(3-2)");
    }
}
