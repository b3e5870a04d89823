//! The few Python semantics the reference's results depend on: slice bounds (negative and
//! out-of-range indices), `sorted` with a key (CPython's timsort, NaN keys included for the short
//! lists LLMLingua sorts), `str.strip` and `str.split(" ")`.

/// A Python slice bound resolved against a sequence of `len` (step 1): negative counts from the
/// end, then clamped to `[0, len]`.
pub fn bound(i: i64, len: usize) -> usize {
    let len_i = len as i64;
    let v = if i < 0 { i + len_i } else { i };
    v.clamp(0, len_i) as usize
}

/// `seq[start:stop]` as a range (empty when `stop <= start` after resolution).
pub fn range(start: Option<i64>, stop: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let a = start.map_or(0, |s| bound(s, len));
    let b = stop.map_or(len, |s| bound(s, len));
    a..b.max(a)
}

/// `sorted(enumerate(values), key=lambda x: key(x[1]))` → the original indices in sorted order,
/// with Python's `<` on floats (NaN compares false). Lists shorter than 64 go through CPython's
/// exact path (`count_run` + binary insertion sort), so even NaN keys land where CPython puts
/// them; longer lists use a stable merge sort, which equals timsort whenever the keys are totally
/// ordered.
pub fn sorted_indices(keys: &[f64]) -> Vec<usize> {
    let mut a: Vec<usize> = (0..keys.len()).collect();
    let lt = |x: usize, y: usize| keys[x] < keys[y];
    let n = a.len();
    if n < 2 {
        return a;
    }
    if n >= 64 {
        a.sort_by(|&x, &y| {
            keys[x]
                .partial_cmp(&keys[y])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        return a;
    }
    // count_run (CPython 3.11): a strictly descending run is reversed.
    let mut run = 2;
    if lt(a[1], a[0]) {
        while run < n && lt(a[run], a[run - 1]) {
            run += 1;
        }
        a[..run].reverse();
    } else {
        while run < n && !lt(a[run], a[run - 1]) {
            run += 1;
        }
    }
    // binarysort from `run`.
    for start in run..n {
        let pivot = a[start];
        let (mut l, mut r) = (0, start);
        while l < r {
            let p = l + ((r - l) >> 1);
            if lt(pivot, a[p]) {
                r = p;
            } else {
                l = p + 1;
            }
        }
        a.copy_within(l..start, l + 1);
        a[l] = pivot;
    }
    a
}

/// Python's `str.isspace` for one character (Unicode whitespace plus the ASCII separators
/// U+001C..U+001F that Rust's `char::is_whitespace` leaves out).
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `s.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds_follow_python() {
        assert_eq!(range(None, Some(-2), 5), 0..3);
        assert_eq!(range(Some(-10), None, 5), 0..5);
        assert_eq!(range(Some(7), None, 5), 5..5);
        assert_eq!(range(Some(4), Some(2), 5), 4..4);
        assert_eq!(range(Some(-3), Some(-1), 5), 2..4);
    }

    #[test]
    fn sort_is_stable_and_ascending() {
        assert_eq!(sorted_indices(&[3.0, 1.0, 2.0, 1.0]), vec![1, 3, 2, 0]);
        assert_eq!(sorted_indices(&[5.0, 4.0, 3.0]), vec![2, 1, 0]);
        // Equal keys keep their order even inside an initial non-descending run.
        assert_eq!(sorted_indices(&[1.0, 1.0, 0.0]), vec![2, 0, 1]);
        let long: Vec<f64> = (0..100).map(|i| ((i * 37) % 100) as f64).collect();
        let idx = sorted_indices(&long);
        assert!(idx.windows(2).all(|w| long[w[0]] <= long[w[1]]));
    }

    #[test]
    fn nan_keys_follow_cpython_insertion() {
        // CPython 3.11: sorted([2.0, nan, 1.0]) == [2.0, nan, 1.0] (one "ascending" run);
        // sorted([nan, 2.0, 1.0]) == [nan, 1.0, 2.0].
        let nan = f64::NAN;
        assert_eq!(sorted_indices(&[2.0, nan, 1.0]), vec![0, 1, 2]);
        assert_eq!(sorted_indices(&[nan, 2.0, 1.0]), vec![0, 2, 1]);
    }

    #[test]
    fn strip_matches_python_whitespace() {
        assert_eq!(strip("\u{1c} a b \n"), "a b");
    }
}
