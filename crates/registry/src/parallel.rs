//! Bounded parallelism over a slice with scoped threads (the engine is synchronous; no async
//! runtime of kiln's own).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f` on every item with at most `max` threads; returns the first error (the other
/// workers stop taking new items once one failed).
pub(crate) fn for_each<T: Sync, E: Send>(
    items: &[T],
    max: usize,
    f: impl Fn(&T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let workers = max.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().try_for_each(f);
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_err.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_err.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_all_and_reports_errors() {
        let seen = AtomicUsize::new(0);
        let items: Vec<u32> = (0..50).collect();
        for_each(&items, 4, |_| {
            seen.fetch_add(1, Ordering::Relaxed);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 50);
        let r = for_each(&items, 3, |i| if *i == 7 { Err(*i) } else { Ok(()) });
        assert_eq!(r, Err(7));
    }
}
