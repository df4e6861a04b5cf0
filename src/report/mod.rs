//! Sinks of events: the printer (plain prefixed lines for people, or the JSON event stream) and the live status
//! area on a terminal.

mod live;
mod printer;

pub use live::{ChannelLine, JobLine, LiveView, TICK};
pub use printer::{Mode, Reporter};
