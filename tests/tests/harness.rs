//! The shared test helpers themselves behave as the other tests rely on.

use std::{cell::RefCell, rc::Rc};

use palisade_tests::{Cleanup, palisade_binary};

#[test]
fn finds_the_built_palisade_binary() {
    let binary = palisade_binary();
    assert!(binary.ends_with("palisade"));
}

#[test]
fn cleanup_runs_every_step_in_reverse_order() {
    let log = Rc::new(RefCell::new(Vec::new()));
    {
        let mut cleanup = Cleanup::new();
        for step in 1..=3 {
            let log = Rc::clone(&log);
            cleanup.defer(format!("step {step}"), move || {
                log.borrow_mut().push(step);
                Ok(())
            });
        }
    }
    assert_eq!(*log.borrow(), [3, 2, 1]);
}

#[test]
#[should_panic(expected = "cleanup failed: step 1")]
fn failed_cleanup_fails_the_test() {
    let mut cleanup = Cleanup::new();
    cleanup.defer("step 1", || anyhow::bail!("could not undo"));
}
