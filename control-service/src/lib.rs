//! BanGUI control-service.
//!
//! Owns fail2ban (its socket protocol), the ban history, the master password
//! and sessions, blocklist imports and the scheduled jobs (see
//! `shared/DESIGN.md` section 3). This crate is a placeholder until the
//! control-service issues land; it exists so the workspace has its final shape.
