//! Gives memory freed in large blocks back to the operating system while the process is quiet.
//!
//! The binary's allocator (mimalloc, `src/main.rs`) returns a large freed block (a password hash's
//! 19 MiB of argon2 memory, a big request body or export) to the OS a second after it was freed —
//! but only from inside a later call that frees a page. A gateway with no request after a login
//! kept those 19 MiB for good (bench/results.md, "idle memory"). Every [`INTERVAL`] this task
//! allocates and frees one block large enough to get a page of its own (never touched, so it
//! costs no memory), which runs the allocator's deferred purge. Reads no config; with another
//! allocator the block is an untouched mapping, made and dropped.

use std::time::Duration;

/// How often the deferred purge gets its chance (the allocator's own delay is 1 s).
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Larger than the allocator's largest size class (512 KiB): the block is a page of its own, and
/// freeing it hands a page back to the arena, which is where the purge runs.
const BLOCK: usize = 1 << 20;

/// Allocates and frees one untouched block (see the module header).
pub fn nudge() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(BLOCK)));
}

/// Runs [`nudge`] every [`INTERVAL`] on the current actix system.
pub fn spawn_returner() {
    actix_web::rt::spawn(async {
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            nudge();
        }
    });
}
