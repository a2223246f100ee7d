//! Placeholder replaced by the dispatch-under-load tool.
fn main() {}
