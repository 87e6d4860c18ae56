//! List download (being written).
