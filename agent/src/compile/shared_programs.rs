//! An endpoint's programs (ingress, egress), shared by reference and hashed once.
//!
//! At 10,000 policies a program is thousands of rule IDs, and the same pair of programs is
//! the key of many local IDs, of the caches that find them, and is compared and hashed on
//! every change that rekeys them: copied and hashed per use, that was about half of a
//! policy change's compile. Shared, a copy is a reference count, a hash is one word, and
//! two keys made from the same programs compare without reading them.

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};
use std::rc::Rc;

use super::program::Program;

/// Compared and ordered by the programs' rules (never by where they are kept), so IDs
/// numbered in key order do not depend on which copy a key holds.
#[derive(Debug, Clone)]
pub(crate) struct SharedPrograms(Rc<Hashed>);

#[derive(Debug)]
struct Hashed {
    programs: [Program; 2],
    /// Of `programs`, with a fixed seed: equal programs hash alike wherever they were made.
    hash: u64,
}

impl SharedPrograms {
    pub fn new(programs: [Program; 2]) -> SharedPrograms {
        let hash = foldhash::fast::FixedState::default().hash_one(&programs);
        SharedPrograms(Rc::new(Hashed { programs, hash }))
    }

    pub fn get(&self) -> &[Program; 2] {
        &self.0.programs
    }
}

impl PartialEq for SharedPrograms {
    fn eq(&self, other: &SharedPrograms) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.programs == other.0.programs)
    }
}

impl Eq for SharedPrograms {}

impl Hash for SharedPrograms {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl Ord for SharedPrograms {
    fn cmp(&self, other: &SharedPrograms) -> Ordering {
        if Rc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        self.0.programs.cmp(&other.0.programs)
    }
}

impl PartialOrd for SharedPrograms {
    fn partial_cmp(&self, other: &SharedPrograms) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::program::ProfileStep;

    fn programs(ingress: &[u32]) -> [Program; 2] {
        [
            Program {
                policies: Some(ingress.to_vec()),
                profiles: vec![ProfileStep::Rules(vec![7])],
            },
            Program {
                policies: None,
                profiles: Vec::new(),
            },
        ]
    }

    fn hash_of(p: &SharedPrograms) -> u64 {
        foldhash::fast::FixedState::default().hash_one(p)
    }

    #[test]
    fn copies_made_apart_are_equal_and_hash_alike() {
        let (a, b) = (
            SharedPrograms::new(programs(&[1, 2])),
            SharedPrograms::new(programs(&[1, 2])),
        );
        assert_eq!(a, b);
        assert_eq!(a.cmp(&b), Ordering::Equal);
        assert_eq!(hash_of(&a), hash_of(&b));
        assert_eq!(a.clone(), a);
    }

    #[test]
    fn other_rules_differ_and_order_as_the_programs_do() {
        let (a, b) = (
            SharedPrograms::new(programs(&[1, 2])),
            SharedPrograms::new(programs(&[1, 3])),
        );
        assert_ne!(a, b);
        assert_eq!(a.cmp(&b), programs(&[1, 2]).cmp(&programs(&[1, 3])));
        assert_eq!(b.cmp(&a), Ordering::Greater);
    }
}
