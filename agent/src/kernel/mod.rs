//! Facts about the running kernel and host the agent needs to name what it
//! sees and what it may do: its BTF (read once), the capabilities it holds, drop reason names, network namespace owners,
//! and the clock offset.

pub mod btf;
pub mod caps;
pub mod clock;
pub mod drop_reason;
pub mod netns;
pub mod process;
