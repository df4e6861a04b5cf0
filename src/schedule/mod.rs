//! The pure maths of time: a cron expression as bit sets (`cron`), and the fire times of cron, interval and `at`
//! triggers on wall time with the DST rules (`trigger`).

pub mod cron;
pub mod trigger;
