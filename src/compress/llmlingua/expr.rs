//! `context_budget`: the reference builds `"target_token" + context_budget` and `eval`s it
//! (`"+100"`, `"*1.5"`). Here that string is parsed as the small arithmetic expression it is —
//! numbers, the name `target_token`, `+ - * / // % **`, unary signs and parentheses, with
//! Python's precedence — and never evaluated as code. Anything else is an error.

/// Evaluates `"target_token" + budget` with `target_token = value`.
pub fn eval_budget(value: f64, budget: &str) -> Result<f64, String> {
    let src = format!("target_token{budget}");
    if src.len() > 256 {
        return Err("context_budget is longer than 256 characters".into());
    }
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
        value,
        depth: 0,
    };
    let v = p.sum()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!(
            "context_budget {budget:?}: unexpected {:?} (only numbers, target_token, + - * / // % ** and parentheses)",
            String::from_utf8_lossy(&p.s[p.i..])
        ));
    }
    if !v.is_finite() {
        return Err(format!(
            "context_budget {budget:?} does not give a finite number"
        ));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    value: f64,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && (self.s[self.i] == b' ' || self.s[self.i] == b'\t') {
            self.i += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(tok.as_bytes()) {
            self.i += tok.len();
            true
        } else {
            false
        }
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut v = self.product()?;
        loop {
            if self.eat("+") {
                v += self.product()?;
            } else if self.eat("-") {
                v -= self.product()?;
            } else {
                return Ok(v);
            }
        }
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut v = self.unary()?;
        loop {
            self.ws();
            if self.s[self.i..].starts_with(b"**") {
                return Ok(v); // handled in power()
            }
            if self.eat("//") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err("context_budget divides by zero".into());
                }
                v = (v / d).floor();
            } else if self.eat("*") {
                v *= self.unary()?;
            } else if self.eat("/") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err("context_budget divides by zero".into());
                }
                v /= d;
            } else if self.eat("%") {
                let d = self.unary()?;
                if d == 0.0 {
                    return Err("context_budget divides by zero".into());
                }
                v -= d * (v / d).floor();
            } else {
                return Ok(v);
            }
        }
    }

    fn unary(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("context_budget is nested too deeply".into());
        }
        let v = if self.eat("-") {
            -self.unary()?
        } else if self.eat("+") {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(v)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.atom()?;
        if self.eat("**") {
            let exp = self.unary()?;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, String> {
        self.ws();
        if self.eat("(") {
            let v = self.sum()?;
            if !self.eat(")") {
                return Err("context_budget: missing ')'".into());
            }
            return Ok(v);
        }
        if self.s[self.i..].starts_with(b"target_token") {
            self.i += "target_token".len();
            return Ok(self.value);
        }
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_digit() || self.s[self.i] == b'.' || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        if self.i < self.s.len() && (self.s[self.i] == b'e' || self.s[self.i] == b'E') {
            let save = self.i;
            self.i += 1;
            if self.i < self.s.len() && (self.s[self.i] == b'+' || self.s[self.i] == b'-') {
                self.i += 1;
            }
            let digits = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if self.i == digits {
                self.i = save;
            }
        }
        let text: String = String::from_utf8_lossy(&self.s[start..self.i]).replace('_', "");
        if text.is_empty() {
            return Err(format!(
                "context_budget: expected a number at {:?}",
                String::from_utf8_lossy(&self.s[start..])
            ));
        }
        text.parse::<f64>()
            .map_err(|_| format!("context_budget: {text:?} is not a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::eval_budget;

    #[test]
    fn reference_budgets() {
        assert_eq!(eval_budget(150.0, "+100").unwrap(), 250.0);
        assert_eq!(eval_budget(200.0, "*1.5").unwrap(), 300.0);
        assert_eq!(eval_budget(10.0, "*2+1").unwrap(), 21.0);
        assert_eq!(eval_budget(10.0, "+2*3").unwrap(), 16.0);
        assert_eq!(eval_budget(10.0, "-(2+3)*2").unwrap(), 0.0);
        assert_eq!(eval_budget(7.0, "//2").unwrap(), 3.0);
        assert_eq!(eval_budget(-7.0, "%3").unwrap(), 2.0);
        assert_eq!(eval_budget(3.0, "**2").unwrap(), 9.0);
        assert_eq!(eval_budget(2.0, "*-2**2").unwrap(), -8.0);
        assert_eq!(eval_budget(1.0, "+1e2").unwrap(), 101.0);
        assert_eq!(eval_budget(1.0, "").unwrap(), 1.0);
    }

    #[test]
    fn code_is_refused() {
        for bad in [
            "+__import__('os').system('x')",
            ";print(1)",
            " if True else 0",
            "+abc",
            "/0",
            "+(1",
            "*10**400",
        ] {
            assert!(eval_budget(1.0, bad).is_err(), "{bad}");
        }
    }
}
