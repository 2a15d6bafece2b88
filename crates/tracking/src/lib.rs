//! Owner-tracking strategies.
