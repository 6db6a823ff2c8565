//! What an address looks like to rules: its family, and as bits, which label tests (selectors,
//! tags) its owners satisfy and which rule CIDRs contain it.

use std::fmt;
use std::net::IpAddr;

/// An IP family. Tables are per family because `ipVersion`, the implied family of
/// `protocol: icmp`/`icmpv6`, and which protocol number is "the" ICMP all depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// 4 or 6, as `ipVersion` writes it.
    pub fn version(self) -> u8 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    /// The protocol number whose packets carry ICMP type and code in this family.
    pub fn icmp_protocol(self) -> u8 {
        match self {
            Family::V4 => crate::policy::PROTO_ICMP,
            Family::V6 => crate::policy::PROTO_ICMPV6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IPv{}", self.version())
    }
}

/// A fixed-length bit vector; two vectors of the same universe compare by content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub fn zeros(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    pub fn set(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    pub fn get(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The bits set in both.
    pub fn and(&self, other: &Bits) -> Bits {
        Bits(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect())
    }

    /// The bits set here and not in `other`.
    pub fn and_not(&self, other: &Bits) -> Bits {
        let word = |i: usize| other.0.get(i).copied().unwrap_or(0);
        Bits(
            self.0
                .iter()
                .enumerate()
                .map(|(i, a)| a & !word(i))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    pub fn count_ones(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The indexes of the bits set, ascending.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    i * 64 + bit
                })
            })
        })
    }
}

/// The answers an address gives to the address tests of rules: bit `i` of `labels` is set
/// when some owner of the address satisfies label test `i`; bit `j` of `cidrs` when rule CIDR
/// `j` contains the address. Tests that were not asked stay 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Signature {
    pub labels: Bits,
    pub cidrs: Bits,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn bits_set_and_get_across_words() {
        let mut b = Bits::zeros(130);
        for i in [0, 63, 64, 129] {
            b.set(i);
        }
        for i in 0..130 {
            assert_eq!(b.get(i), [0, 63, 64, 129].contains(&i), "bit {i}");
        }
        assert!(!b.get(1000));
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 63, 64, 129]);
        assert_eq!(b.count_ones(), 4);
        let mut low = Bits::zeros(130);
        low.set(0);
        low.set(64);
        assert_eq!(b.and(&low).ones().collect::<Vec<_>>(), [0, 64]);
        assert_eq!(b.and_not(&low).ones().collect::<Vec<_>>(), [63, 129]);
        assert!(b.and_not(&b).is_empty());
        assert_eq!(b, {
            let mut c = Bits::zeros(130);
            for i in [129, 64, 63, 0] {
                c.set(i);
            }
            c
        });
    }
}
