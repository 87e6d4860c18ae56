//! List parsing (being written).
