//! The web UI against a real Redis (a private `redis-server` per test): its handlers (the
//! pages show what the Inspector reads, links follow the base path, unknown queues and tasks
//! are 404, authentication, anti-forgery and read-only refusals, every action through the
//! library), and the pages in a real headless browser.

mod actions;
mod browser;
mod helpers;
mod pages;
