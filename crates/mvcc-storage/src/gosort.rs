//! A faithful port of Go's `sort.Sort` (pattern-defeating quicksort, Go 1.19
//! and later, `src/sort/zsortinterface.go`).
//!
//! etcd sorts range results with `sort.Sort`, which is not stable: keys that
//! tie on the sort target (same version, same value, ...) come out in an order
//! that depends on the exact algorithm. `etcdctl get --sort-by=VERSION` prints
//! that order, so matching etcd byte for byte means running the same swaps and
//! comparisons. Rust's `sort_unstable_by` would order ties differently.

/// Sorts `data` ascending by `less`, exactly as Go's `sort.Sort` would.
///
/// The reference etcd (Debian's 3.4.23) is built with Go 1.19, so its
/// xorshift triple is the one used.
pub fn go_sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    if n <= 1 {
        return;
    }
    let limit = bits_len(n);
    let mut s = Sorter { data, less };
    s.pdqsort(0, n, limit);
}

/// Go's `bits.Len`: the number of bits needed to represent `x`.
fn bits_len(x: usize) -> usize {
    (usize::BITS - x.leading_zeros()) as usize
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hint {
    Unknown,
    Increasing,
    Decreasing,
}

struct Sorter<'a, T, F> {
    data: &'a mut [T],
    less: F,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.data[i], &self.data[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.data.swap(i, j);
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let first = a;
        let lo = 0;
        let hi = b - a;
        let mut i = (hi as isize - 1) / 2;
        while i >= 0 {
            self.sift_down(i as usize, hi, first);
            i -= 1;
        }
        let mut i = hi as isize - 1;
        while i >= 0 {
            self.swap(first, first + i as usize);
            self.sift_down(lo, i as usize, first);
            i -= 1;
        }
    }

    fn pdqsort(&mut self, mut a: usize, mut b: usize, mut limit: usize) {
        const MAX_INSERTION: usize = 12;
        let mut was_balanced = true;
        let mut was_partitioned = true;
        loop {
            let length = b - a;
            if length <= MAX_INSERTION {
                self.insertion_sort(a, b);
                return;
            }
            if limit == 0 {
                self.heap_sort(a, b);
                return;
            }
            if !was_balanced {
                self.break_patterns(a, b);
                limit -= 1;
            }
            let (mut pivot, mut hint) = self.choose_pivot(a, b);
            if hint == Hint::Decreasing {
                self.reverse_range(a, b);
                pivot = (b - 1) - (pivot - a);
                hint = Hint::Increasing;
            }
            if was_balanced && was_partitioned && hint == Hint::Increasing && self.partial_insertion_sort(a, b) {
                return;
            }
            if a > 0 && !self.less(a - 1, pivot) {
                let mid = self.partition_equal(a, b, pivot);
                a = mid;
                continue;
            }
            let (mid, already_partitioned) = self.partition(a, b, pivot);
            was_partitioned = already_partitioned;
            let (left_len, right_len) = (mid - a, b - mid);
            let balance_threshold = length / 8;
            if left_len < right_len {
                was_balanced = left_len >= balance_threshold;
                self.pdqsort(a, mid, limit);
                a = mid + 1;
            } else {
                was_balanced = right_len >= balance_threshold;
                self.pdqsort(mid + 1, b, limit);
                b = mid;
            }
        }
    }

    fn partition(&mut self, a: usize, b: usize, pivot: usize) -> (usize, bool) {
        self.swap(a, pivot);
        // i and j are inclusive bounds of what is left to partition; j may
        // drop below a+1 (to a), so keep them signed like Go does.
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        while i <= j && self.less(i as usize, a) {
            i += 1;
        }
        while i <= j && !self.less(j as usize, a) {
            j -= 1;
        }
        if i > j {
            self.swap(j as usize, a);
            return (j as usize, true);
        }
        self.swap(i as usize, j as usize);
        i += 1;
        j -= 1;
        loop {
            while i <= j && self.less(i as usize, a) {
                i += 1;
            }
            while i <= j && !self.less(j as usize, a) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        self.swap(j as usize, a);
        (j as usize, false)
    }

    fn partition_equal(&mut self, a: usize, b: usize, pivot: usize) -> usize {
        self.swap(a, pivot);
        let (mut i, mut j) = (a as isize + 1, b as isize - 1);
        loop {
            while i <= j && !self.less(a, i as usize) {
                i += 1;
            }
            while i <= j && self.less(a, j as usize) {
                j -= 1;
            }
            if i > j {
                break;
            }
            self.swap(i as usize, j as usize);
            i += 1;
            j -= 1;
        }
        i as usize
    }

    fn partial_insertion_sort(&mut self, a: usize, b: usize) -> bool {
        const MAX_STEPS: usize = 5;
        const SHORTEST_SHIFTING: usize = 50;
        let mut i = a + 1;
        for _ in 0..MAX_STEPS {
            while i < b && !self.less(i, i - 1) {
                i += 1;
            }
            if i == b {
                return true;
            }
            if b - a < SHORTEST_SHIFTING {
                return false;
            }
            self.swap(i, i - 1);
            // Shift the smaller one to the left (Go compares down to index 1,
            // not to `a`; kept as is).
            if i - a >= 2 {
                let mut j = i - 1;
                while j >= 1 {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                    j -= 1;
                }
            }
            // Shift the greater one to the right.
            if b - i >= 2 {
                let mut j = i + 1;
                while j < b {
                    if !self.less(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                    j += 1;
                }
            }
        }
        false
    }

    fn break_patterns(&mut self, a: usize, b: usize) {
        let length = b - a;
        if length >= 8 {
            let mut random = length as u64;
            let modulus = 1usize << bits_len(length);
            let start = a + (length / 4) * 2 - 1;
            for idx in start..=start + 2 {
                // Go 1.19's triple; Go 1.22's `sort` uses (13, 7, 17), so etcd
                // built with newer Go can order ties differently on large
                // inputs that need pattern breaking.
                random ^= random << 13;
                random ^= random >> 17;
                random ^= random << 5;
                let mut other = (random as usize) & (modulus - 1);
                if other >= length {
                    other -= length;
                }
                self.swap(idx, a + other);
            }
        }
    }

    fn choose_pivot(&mut self, a: usize, b: usize) -> (usize, Hint) {
        const SHORTEST_NINTHER: usize = 50;
        const MAX_SWAPS: usize = 4 * 3;
        let l = b - a;
        let mut swaps = 0;
        let mut i = a + l / 4;
        let mut j = a + l / 4 * 2;
        let mut k = a + l / 4 * 3;
        if l >= 8 {
            if l >= SHORTEST_NINTHER {
                i = self.median_adjacent(i, &mut swaps);
                j = self.median_adjacent(j, &mut swaps);
                k = self.median_adjacent(k, &mut swaps);
            }
            j = self.median(i, j, k, &mut swaps);
        }
        match swaps {
            0 => (j, Hint::Increasing),
            MAX_SWAPS => (j, Hint::Decreasing),
            _ => (j, Hint::Unknown),
        }
    }

    fn order2(&self, a: usize, b: usize, swaps: &mut usize) -> (usize, usize) {
        if self.less(b, a) {
            *swaps += 1;
            (b, a)
        } else {
            (a, b)
        }
    }

    fn median(&self, a: usize, b: usize, c: usize, swaps: &mut usize) -> usize {
        let (a, b) = self.order2(a, b, swaps);
        let (b, c) = self.order2(b, c, swaps);
        let (_a, b) = self.order2(a, b, swaps);
        let _ = c;
        b
    }

    fn median_adjacent(&self, a: usize, swaps: &mut usize) -> usize {
        self.median(a - 1, a, a + 1, swaps)
    }

    fn reverse_range(&mut self, a: usize, b: usize) {
        let (mut i, mut j) = (a, b - 1);
        while i < j {
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator so tests need no RNG crate.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn sorts_like_any_correct_sort() {
        let mut seed = 42;
        for n in [0, 1, 2, 5, 12, 13, 49, 50, 51, 100, 257, 1000, 5000] {
            for modulo in [2, 10, 1_000_000] {
                let mut v: Vec<u64> = (0..n).map(|_| lcg(&mut seed) % modulo).collect();
                let mut want = v.clone();
                want.sort();
                go_sort(&mut v, |a, b| a < b);
                assert_eq!(v, want, "n={n} modulo={modulo}");
            }
            // Already sorted, reversed, and all-equal inputs exercise the
            // pattern paths (partial insertion sort, reversal, equal partition).
            let mut asc: Vec<u64> = (0..n as u64).collect();
            go_sort(&mut asc, |a, b| a < b);
            assert!(asc.windows(2).all(|w| w[0] <= w[1]));
            let mut desc: Vec<u64> = (0..n as u64).rev().collect();
            go_sort(&mut desc, |a, b| a < b);
            assert!(desc.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn short_inputs_are_stable_like_go_insertion_sort() {
        // (key, original position): with <= 12 elements Go runs insertion sort,
        // which keeps ties in input order.
        let mut v: Vec<(u8, usize)> = [3, 1, 3, 2, 1, 3].iter().copied().zip(0..).collect();
        go_sort(&mut v, |a, b| a.0 < b.0);
        assert_eq!(v, vec![(1, 1), (1, 4), (2, 3), (3, 0), (3, 2), (3, 5)]);
        // Reversed comparator (Go's sort.Reverse) also keeps ties in input order.
        let mut v: Vec<(u8, usize)> = [3, 1, 3, 2, 1, 3].iter().copied().zip(0..).collect();
        go_sort(&mut v, |a, b| b.0 < a.0);
        assert_eq!(v, vec![(3, 0), (3, 2), (3, 5), (2, 3), (1, 1), (1, 4)]);
    }

    /// Tie order must be Go's exactly. `testdata/go_sort_ties.txt` was
    /// produced by Go 1.19.8's `sort.Sort` (and `sort.Reverse`) on inputs
    /// with many ties; each line is `n reversed keys... | original positions...`.
    #[test]
    fn tie_order_matches_go() {
        let fixture = include_str!("testdata/go_sort_ties.txt");
        let mut lines = 0;
        for line in fixture.lines() {
            let (input, want) = line.split_once(" | ").unwrap();
            let mut fields = input.split(' ');
            let n: usize = fields.next().unwrap().parse().unwrap();
            let reversed: bool = fields.next().unwrap().parse().unwrap();
            let keys: Vec<u64> = fields.map(|f| f.parse().unwrap()).collect();
            assert_eq!(keys.len(), n);
            let want: Vec<usize> = want.split(' ').map(|f| f.parse().unwrap()).collect();
            let mut items: Vec<(u64, usize)> = keys.into_iter().zip(0..).collect();
            if reversed {
                go_sort(&mut items, |a, b| b.0 < a.0);
            } else {
                go_sort(&mut items, |a, b| a.0 < b.0);
            }
            let got: Vec<usize> = items.iter().map(|i| i.1).collect();
            assert_eq!(got, want, "{line}");
            lines += 1;
        }
        assert!(lines > 10);
    }
}
