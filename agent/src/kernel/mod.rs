//! Facts about the running kernel and host the agent needs to name what it
//! sees: its BTF (read once), drop reason names, network namespace owners,
//! and the clock offset.

pub mod btf;
pub mod clock;
pub mod drop_reason;
pub mod netns;
pub mod process;
